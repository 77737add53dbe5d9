// The programs are the `pmtu` binary target (src/main.rs), built for
// bpfel-unknown-none by pmtu-user's build script. This empty library lets
// pmtu-user name the crate as a build-dependency so cargo rebuilds on change.
#![no_std]
