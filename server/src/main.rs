//! The `tribune` binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tribune_server::main()
}
