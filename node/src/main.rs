//! The `ire` binary.

fn main() -> std::process::ExitCode {
    ire_node::cli::main()
}
