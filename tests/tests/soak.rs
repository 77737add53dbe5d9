//! A short run of the flood soak (`cargo xtask soak` runs it longer): the
//! transfer completes under the flood, every PTB the kernel parsed is
//! accounted for exactly, and the tracer's memory does not grow.

use pmtu_tests::{require_root, soak};

#[test]
fn short_flood_soak() {
    if !require_root("short_flood_soak") {
        return;
    }
    let f = soak::run(4).unwrap();
    eprintln!("{}", f.report());
    assert!(f.sent > 10_000, "the flood ran: {}", f.sent);
    assert!(f.transfers_ok(), "{f:?}");
    assert!(f.identity_holds(), "produced == delivered + rate-limited + lost: {f:?}");
    assert!(f.rate_limited > 0 && f.invalid > 0, "{f:?}");
    assert!(f.rss_growth_kib() < 4 * 1024, "{f:?}");
}
