//! `popup-operator`: the controller and its companion commands (see `cli`).

fn main() -> std::process::ExitCode {
    popup_operator::cli::main()
}
