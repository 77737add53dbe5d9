//! `cargo xtask soak --secs N` runs this: the flood soak, its figures, and
//! a non-zero exit if the transfer stalled, the event identity broke, or
//! the tracer's memory grew.

use std::process::ExitCode;

/// RSS growth after warm-up that counts as "not flat".
const RSS_SLACK_KIB: i64 = 4 * 1024;

fn main() -> ExitCode {
    if let Err(e) = pmtu_user::lab::remove_labs_on_signal() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    match pmtu_tests::soak::run(secs) {
        Ok(f) => {
            println!("{}", f.report());
            let mut ok = true;
            if !f.transfers_ok() {
                eprintln!("soak: FAIL: transfers did not all complete under the flood");
                ok = false;
            }
            if !f.identity_holds() {
                eprintln!("soak: FAIL: produced != delivered + rate-limited + lost");
                ok = false;
            }
            if f.rss_growth_kib() > RSS_SLACK_KIB {
                eprintln!("soak: FAIL: tracer RSS grew {} KiB after warm-up", f.rss_growth_kib());
                ok = false;
            }
            if ok {
                println!("soak: PASS");
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
