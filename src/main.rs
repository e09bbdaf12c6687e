//! The `certkeeper` binary: a thin edge over `certkeeper::cli`.

fn main() -> std::process::ExitCode {
    certkeeper::cli::main()
}
