//! The verbs: one file per group, each verb a short function that finds the machine,
//! calls the library and prints (ripgrep's layout). Arrows point down only: `mod.rs`
//! dispatches; `machine.rs` may go through `unit.rs`; all print through `output.rs`.

use clap::CommandFactory;

use mm::error::{Error, ExitCode};

use crate::cli::{Cli, Command};

mod definitions;
mod export;
mod image;
mod machine;
mod oci;
mod output;
mod ps;
mod unit;

pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    if let Some(root) = mm::host::root_not_a_dir() {
        return Err(Error::RootNotADir(root));
    }
    match cli.command {
        Command::Validate { machines, json } => definitions::validate(&machines, json),
        Command::Plan {
            machine,
            json,
            host_file,
        } => definitions::plan(&machine, json, host_file.as_deref()),
        Command::List { json } => definitions::list(json),
        Command::Host { json } => definitions::host(json),
        Command::Image(command) => image::run(command),
        Command::Oci(args) => oci::run(args),
        Command::Run {
            machine,
            keep_unit,
            authfile,
        } => machine::run(&machine, keep_unit, &mm::machine::Pull { authfile }),
        Command::Start {
            machine,
            no_systemd,
            authfile,
        } => machine::start(&machine, !no_systemd, &mm::machine::Pull { authfile }),
        Command::Stop { machine, timeout } => machine::stop(&machine, timeout),
        Command::Kill {
            machine,
            signal,
            all,
            leader: _,
        } => machine::kill(&machine, signal, all),
        Command::Ps { machine, json } => ps::ps(&machine, json),
        Command::Bind {
            machine,
            source,
            target,
            read_only,
        } => machine::bind(&machine, &source, &target, read_only),
        Command::Status { machine, json } => machine::status(&machine, json),
        Command::Exec {
            machine,
            user,
            command,
        } => machine::exec(&machine, user.as_deref(), command),
        Command::Shell {
            machine,
            user,
            command,
        } => machine::shell(&machine, user.as_deref(), command),
        Command::Rm { machine } => machine::rm(&machine),
        Command::Export {
            machine,
            bin,
            app,
            list,
            json,
            name,
            force,
            bin_dir,
            apps_dir,
        } => export::export(export::Asked {
            machine,
            bin,
            app,
            list,
            json,
            name,
            force,
            bin_dir,
            apps_dir,
        }),
        Command::Unexport {
            machine,
            bin,
            app,
            all,
        } => export::unexport(&machine, bin, app, all),
        Command::Commit {
            machine,
            tag,
            force,
        } => export::commit(&machine, tag.as_deref(), force),
        Command::Logs {
            machine,
            follow,
            lines,
        } => unit::logs(&machine, follow, lines),
        Command::Enable { machine, now } => unit::enable(&machine, now),
        Command::Disable { machine, now } => unit::disable(&machine, now),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mm", &mut std::io::stdout());
            Ok(ExitCode::Ok)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .map_err(Error::Output)?;
            Ok(ExitCode::Ok)
        }
    }
}
