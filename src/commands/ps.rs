//! `mm ps` (`mm top`): a running machine's processes, as a tree, in text or JSON.

use mm::error::{Error, ExitCode};
use mm::machine::{machine_paths, reconciled};
use mm::runtime::procs::{self, Process};
use mm::runtime::{RuntimeError, state};

use super::output::{print, print_json};

pub fn ps(machine: &str, json: bool) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    let (leader, launch) = state::running(&paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e))?
        .ok_or_else(|| RuntimeError::NotRunning { name: name.clone() })?;
    let processes = procs::list(&name, leader, &launch)?;
    if json {
        print_json(&processes)?;
    } else {
        print(&table(&processes))?;
    }
    Ok(ExitCode::Ok)
}

/// `HPID PID USER COMMAND`, children below their parents as `ps f` draws them.
fn table(processes: &[Process]) -> String {
    let user = |p: &Process| match (&p.user, p.uid) {
        (Some(name), _) => name.clone(),
        (None, Some(uid)) => uid.to_string(),
        (None, None) => "?".to_owned(),
    };
    let users: Vec<String> = processes.iter().map(user).collect();
    let width = users.iter().map(String::len).max().unwrap_or(0).max(4);
    let mut out = format!("{:>8} {:>7} {:width$} COMMAND\n", "HPID", "PID", "USER");
    for (p, user) in processes.iter().zip(&users) {
        let tree = if p.depth == 0 {
            String::new()
        } else {
            format!("{}\\_ ", "   ".repeat(p.depth - 1))
        };
        out.push_str(&format!(
            "{:>8} {:>7} {user:width$} {tree}{}\n",
            p.host_pid,
            p.pid,
            p.argv.join(" ")
        ));
    }
    out
}
