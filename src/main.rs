mod cli;
mod commands;

use clap::Parser;

const SUPERVISOR_ARG: &str = "__supervise";

/// The name under which mm is `mm oci` (docs/oci.md).
const OCI_NAME: &str = "mm-runc";

fn main() -> std::process::ExitCode {
    // The rootless unpack worker must unshare its user namespace while it has one thread.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == mm::image::worker::WORKER_ARG)
    {
        mm::image::worker::main(|e| mm::error::image_exit_code(e) as u8);
    }
    // So must the processes that hold and join an ordinary user's zone.
    match std::env::args_os().nth(1) {
        Some(a) if a == mm::runtime::zone::KEEPER_ARG => mm::runtime::zone::keeper_main(),
        Some(a) if a == mm::runtime::zone::RELEASE_ARG => mm::runtime::zone_release_main(),
        _ => {}
    }
    // The supervisor, too, must start single-threaded.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == SUPERVISOR_ARG)
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let detach = args.iter().any(|a| a == "--detach");
        let fd = args
            .iter()
            .find_map(|a| a.strip_prefix(mm::machine::LAUNCH_FD_ARG))
            .and_then(|n| n.parse().ok());
        let lock = args
            .iter()
            .find_map(|a| a.strip_prefix(mm::runtime::supervisor::LOCK_FD_ARG))
            .and_then(|n| n.parse().ok());
        let answer = args
            .iter()
            .find_map(|a| a.strip_prefix(mm::runtime::supervisor::ANSWER_FD_ARG))
            .and_then(|n| n.parse().ok());
        mm::runtime::supervisor::main(detach, fd, lock, answer);
    }
    // Installed as mm-runc (a symlink to mm), mm is `mm oci`: podman, conmon and
    // containerd's shim call their runtime with runc's global flags, then the verb.
    let invoked = std::env::args_os().next().unwrap_or_default();
    let cli = if std::path::Path::new(&invoked)
        .file_name()
        .is_some_and(|name| name == OCI_NAME)
    {
        let rest = std::env::args_os().skip(1);
        cli::Cli::parse_from(["mm".into(), "oci".into()].into_iter().chain(rest))
    } else {
        cli::Cli::parse()
    };
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
