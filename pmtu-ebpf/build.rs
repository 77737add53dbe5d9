use which::which;

/// Rebuild when bpf-linker changes, and fail early with the fix if it is missing.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!(
                "cargo:warning=bpf-linker not found ({err}); install it with `cargo install bpf-linker --version 0.10.3 --locked` or run `cargo xtask build`"
            );
        }
    }
}
