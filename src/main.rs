mod cli;
mod commands;
mod image_commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(mm::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => mm::ExitCode::Ok,
        Err(e) => {
            eprintln!("{}", e.render());
            e.exit_code()
        }
    };
    std::process::ExitCode::from(code as u8)
}
