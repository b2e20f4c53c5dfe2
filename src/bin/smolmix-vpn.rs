//! `smolmix-vpn`: the command-line client. The binary's edge: anyhow and user-facing messages
//! live here, everything else is in the `smolmix` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use tokio::signal::unix::{signal, SignalKind};

use smolmix::cli::{profile, Cli, Command, DirectoryArgs, ExecArgs, OnOff, UpArgs, DEFAULT_RUN_DIR};
use smolmix::driver::{self, Report, UpConfig};
use smolmix::manual;
use smolmix::system::exec::{self, ExecSpec};
use smolmix::system::notify::Notifier;
use smolmix::system::status::State;
use smolmix::system::{self, host, journal, lock, status};

fn main() -> ExitCode {
    // The matches too: a profile yields to what the command line gave (ArgMatches::value_source).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(cli.verbose);
    let result = match cli.command {
        // Before anything else: exec forks, and must do so before any runtime thread exists.
        Command::Exec(args) => match cmd_exec(args, &matches, &cli.run_dir) {
            // The command's own status, as sudo and `ip netns exec` pass it through.
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
            Err(e) => Err(e),
        },
        Command::Up(args) => {
            let up = matches.subcommand_matches("up").expect("the `up` subcommand was parsed");
            cmd_up(args, up, &cli.profile_dir, &cli.run_dir, &cli.state_dir)
        }
        Command::Block(args) => {
            let block = matches.subcommand_matches("block").expect("the `block` subcommand was parsed");
            cmd_block(args, block, &cli.profile_dir, &cli.run_dir, &cli.state_dir)
        }
        Command::Down { stale } => cmd_down(&cli.run_dir, &cli.state_dir, stale),
        Command::Status { json } => cmd_status(&cli.run_dir, json),
        Command::Exits { json, directory } => cmd_exits(json, directory),
        Command::Completions { shell } => emit(&manual::completions(shell)),
        Command::Man { dir: None } => emit(&manual::man_page()),
        Command::Man { dir: Some(dir) } => cmd_man_dir(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolmix-vpn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    // Our own warnings by default, only errors from dependencies: the SDK warns about things
    // (DNS fallbacks, retries) that our own error line already explains.
    let default = match verbose {
        0 => "error,smolmix=warn,smolmix_vpn=warn",
        1 => "warn,smolmix=info,smolmix_vpn=info",
        2 => "info,smolmix=debug,smolmix_vpn=debug",
        _ => "debug,smolmix=trace,smolmix_vpn=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: a service's journal or a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn cmd_up(args: UpArgs, matches: &ArgMatches, profile_dir: &Path, run_dir: &Path, state_dir: &Path) -> Result<()> {
    // First, while no other thread exists (it edits the environment).
    let notifier = Notifier::from_env();
    let args = profile::resolve(args, matches, profile_dir)?;
    args.validate()?;
    if !system::has_net_admin() {
        bail!("`smolmix-vpn up` changes interfaces and routes and needs root (or CAP_NET_ADMIN): run it with sudo");
    }
    // The run dir is ours alone and this is the only `up` until we exit (lock.rs): a second
    // one stops here, before it could replay the first one's journal.
    lock::prepare(run_dir)?;
    let _instance = lock::InstanceLock::acquire(run_dir).map_err(|e| match lock::holder(run_dir) {
        Some(pid) => anyhow::anyhow!("smolmix-vpn is already running (pid {pid}); run `smolmix-vpn down` first"),
        None => e.into(),
    })?;
    // What an earlier run left (a crash, a restart, the boot-time lockdown) is taken over by
    // `up` itself, without opening the host for an instant (driver/guard.rs).
    match journal::load(run_dir).unwrap_or_default().as_slice() {
        [] => {}
        // Only a kill switch: the lockdown (`block`, at boot) waits for us.
        [only] if *only == (journal::Undo::Nft { args: system::firewall::undo_args() }) => {
            eprintln!("smolmix-vpn: the host is blocked (smolmix-vpn block); taking over its kill switch")
        }
        _ => eprintln!("smolmix-vpn: an earlier run did not stop cleanly; taking over from it"),
    }
    lock::prepare(state_dir)?;
    match recover_state(state_dir) {
        Ok(true) => eprintln!("smolmix-vpn: restored {} from the backup an earlier run left", resolv_conf().display()),
        Ok(false) => {}
        Err(e) => eprintln!("smolmix-vpn: warning: cleanup: {e}"),
    }
    let cfg = up_config(&args, run_dir, state_dir);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        driver::up(cfg, shutdown, move |r| show(r, notifier.as_ref())).await.context("smolmix-vpn up")
    })
}

/// What `up` (and `block`) act on, from the checked options.
fn up_config(args: &UpArgs, run_dir: &Path, state_dir: &Path) -> UpConfig {
    UpConfig {
        ipr: args.ipr.clone(),
        transport: args.open_options(),
        tun: args.tun.clone(),
        mtu_override: args.mtu,
        routes: args.effective_routes(),
        excludes: args.excludes.clone(),
        allow_lan: args.allow_lan,
        ipv6: args.ipv6 == OnOff::On,
        run_dir: run_dir.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        dns: args.effective_dns(),
        dns_check_name: args.dns_check_name.clone(),
        netns: args.netns.clone(),
    }
}

/// `block`: the kill switch `up` with these options would put in place before connecting, and
/// nothing else; for boot, before the network is up (dist/smolmix-vpn-lockdown@.service).
fn cmd_block(args: UpArgs, matches: &ArgMatches, profile_dir: &Path, run_dir: &Path, state_dir: &Path) -> Result<()> {
    let args = profile::resolve(args, matches, profile_dir)?;
    args.validate()?;
    if !system::has_net_admin() {
        bail!("`smolmix-vpn block` installs a firewall and needs root (or CAP_NET_ADMIN): run it with sudo");
    }
    let cfg = up_config(&args, run_dir, state_dir);
    if !cfg.full_tunnel() {
        bail!("nothing to block: with --route or --netns the tunnel never closes the host (only the full tunnel has a kill switch)");
    }
    lock::prepare(run_dir)?;
    let _instance = match lock::InstanceLock::acquire(run_dir) {
        Ok(l) => l,
        Err(lock::RunDirError::Running { .. }) => {
            println!("a tunnel is running; it keeps the host closed itself");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for f in driver::block(&cfg).context("smolmix-vpn block")? {
        eprintln!("smolmix-vpn: warning: undoing what an earlier run left: {f}");
    }
    println!("blocked: nothing leaves the host but through the tunnel (not up yet); `smolmix-vpn up` connects, `smolmix-vpn down` opens the host");
    Ok(())
}

/// Where each report of `up` goes: steps and outcomes to stdout, losses and warnings to
/// stderr, and what systemd should know to its notification socket (system/notify.rs).
fn show(r: Report<'_>, notifier: Option<&Notifier>) {
    // Never println!: it panics once the reader is gone (`up | head -1`), and a panic here
    // would skip the rollback. A lost report line is not worth the host's state.
    use std::io::Write;
    let out = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let warn = |line: &str| drop(writeln!(std::io::stderr(), "smolmix-vpn: warning: {line}"));
    match r {
        Report::Step(line) => {
            out(line);
            if let Some(n) = notifier {
                n.status(&format!("connecting: {}", line.trim()));
            }
        }
        Report::Connected(line) => {
            out(line);
            if let Some(n) = notifier {
                n.ready(line);
            }
        }
        Report::Reconnected(line) => {
            out(line);
            if let Some(n) = notifier {
                n.status(line);
            }
        }
        Report::Lost(line) => {
            warn(line);
            if let Some(n) = notifier {
                n.status(&format!("reconnecting: {line}"));
            }
        }
        Report::Retrying(line) => {
            warn(line);
            if let Some(n) = notifier {
                n.status(&format!("connecting: {line}"));
            }
        }
        Report::Warning(line) => warn(line),
        Report::Note(line) => out(line),
        Report::Stopping => {
            if let Some(n) = notifier {
                n.stopping();
            }
        }
    }
}

/// `exec`: runs the command in the running per-app tunnel's namespace; returns its exit code.
fn cmd_exec(args: ExecArgs, matches: &ArgMatches, run_dir: &Path) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`smolmix-vpn exec` enters a network namespace and switches user: run it with sudo");
    }
    // Run through sudo by a user (a sudoers rule granting `smolmix-vpn exec`), exec serves that
    // user: programs run only as them (exec_user.rs), and the status file, which names the
    // namespace to enter, is read only from the default run dir, never one they could point at.
    let caller = exec::delegated_caller(|v| std::env::var(v).ok())?;
    let (run_dir, ignored) = match caller {
        Some((uid, _)) => {
            let ignored = directory_overrides(matches);
            if !ignored.is_empty() {
                eprintln!(
                    "smolmix-vpn: warning: exec run through sudo by uid {uid} uses {DEFAULT_RUN_DIR}; ignored {}",
                    ignored.join(", ")
                );
            }
            (PathBuf::from(DEFAULT_RUN_DIR), ignored)
        }
        None => (run_dir.to_path_buf(), Vec::new()),
    };
    // Who runs the program first: a refusal needs no tunnel.
    exec::target_user(args.user.as_deref())?;
    let none_running = || {
        let mut why = format!("no tunnel is running (state in {})", run_dir.display());
        if !ignored.is_empty() {
            why.push_str(&format!("; under sudo {} is ignored", ignored.join(", ")));
        }
        anyhow::anyhow!("{why}: start one with `sudo smolmix-vpn up --netns NAME` first")
    };
    if std::fs::symlink_metadata(&run_dir).is_err() {
        return Err(none_running());
    }
    // The status file says which namespace to enter and which DNS servers to show: trusted
    // only from a directory nobody else can write (lock.rs, as `up` and `down` check it), and
    // only while an `up` holds its lock there: a status file outlives a crash.
    lock::check(&run_dir)?;
    if !lock::held(&run_dir) {
        return Err(none_running());
    }
    let connecting =
        || anyhow::anyhow!("the tunnel is still connecting: wait for `smolmix-vpn status` to say connected");
    // An `up` alive without a status yet has only just started.
    let st = status::read(&run_dir).ok_or_else(connecting)?;
    if st.state == State::Connecting {
        return Err(connecting());
    }
    if !st.state.is_running() {
        return Err(none_running());
    }
    let Some(ns) = st.netns else {
        bail!("the running tunnel covers the whole host (it was not started with --netns); run the program directly");
    };
    if let Some(want) = args.netns.as_deref().filter(|w| *w != ns) {
        bail!("no tunnel runs in namespace {want} (the running one uses {ns})");
    }
    // Fail closed if someone gave the namespace another way out since `up` checked it.
    let others = system::netns::foreign_links(&ns, &st.tun).context("cannot list the namespace's interfaces")?;
    if !others.is_empty() {
        bail!(
            "namespace {ns} has interfaces besides the tunnel ({}): refusing to run programs there",
            others.join(", ")
        );
    }
    let dns =
        st.dns.iter().map(|d| d.parse()).collect::<Result<Vec<_>, _>>().context("bad DNS server in the status file")?;
    let mut command = args.command.into_iter();
    let spec = ExecSpec { netns: ns, user: args.user, dns, program: command.next(), args: command.collect() };
    exec::exec(&spec).context("smolmix-vpn exec")
}

/// The directory options given on the command line or in the environment (not defaults), as
/// the user would recognise them: `--run-dir DIR` or `SMOLMIX_RUN_DIR=DIR`.
fn directory_overrides(matches: &ArgMatches) -> Vec<String> {
    use clap::parser::ValueSource;
    let given = [("run_dir", "--run-dir ", "SMOLMIX_RUN_DIR="), ("state_dir", "--state-dir ", "SMOLMIX_STATE_DIR=")];
    given
        .into_iter()
        .filter_map(|(id, flag, var)| {
            // Globals may be given before or after the subcommand; clap records either.
            let m = [Some(matches), matches.subcommand_matches("exec")]
                .into_iter()
                .flatten()
                .max_by_key(|m| m.value_source(id))?;
            let value = m.get_one::<PathBuf>(id)?.display();
            match m.value_source(id)? {
                ValueSource::CommandLine => Some(format!("{flag}{value}")),
                ValueSource::EnvVariable => Some(format!("{var}{value}")),
                _ => None,
            }
        })
        .collect()
}

#[cfg(feature = "mixnet")]
fn cmd_exits(json: bool, directory: DirectoryArgs) -> Result<()> {
    let opts = directory.mixnet_options();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    let exits = rt.block_on(smolmix::transport::mixnet::list_exits(&opts)).context("smolmix-vpn exits")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&exits)?);
        return Ok(());
    }
    println!("{:<5} {:<9} {:<5} ADDRESS", "PERF", "VERSION", "IPR");
    for e in &exits {
        let proto = e.ipr_protocol.map_or("-".to_string(), |v| format!("v{v}"));
        println!("{:>4.0}% {:<9} {:<5} {}", e.performance * 100.0, e.version, proto, e.address);
    }
    eprintln!("{} IPR exits", exits.len());
    Ok(())
}

#[cfg(not(feature = "mixnet"))]
fn cmd_exits(_json: bool, _directory: DirectoryArgs) -> Result<()> {
    bail!("this build has no Nym mixnet support (cargo feature `mixnet`)")
}

fn cmd_down(run_dir: &Path, state_dir: &Path, stale: bool) -> Result<()> {
    let mut stopped = false;
    let mut pending = 0;
    let mut failures = Vec::new();
    // No run dir: nothing ran since boot, but a backup in the state dir may still wait.
    if std::fs::symlink_metadata(run_dir).is_ok() {
        // Never replay a journal from a directory someone else could have written.
        lock::check(run_dir)?;
        if let Some(pid) = lock::holder(run_dir).filter(|_| stale) {
            // Its journal and the resolv.conf backup are its own to undo, and in use.
            println!("a tunnel is running (pid {pid}); left alone (--stale)");
            return Ok(());
        }
        if let Some(why) = stale.then(service_did_not_stop_cleanly).flatten() {
            if journal::load(run_dir).is_ok_and(|u| !u.is_empty()) {
                // The crash path of the unit: a deliberate stop ends with `success`; anything
                // else must not open the host (Restart= brings `up` back, and it takes over).
                println!(
                    "the service ended by {why}, not by a stop: the host is kept closed (blocked); \
                     a restart takes over, `smolmix-vpn down` opens it"
                );
                return Ok(());
            }
        }
        if let Some(pid) = lock::holder(run_dir) {
            // A live `up` undoes its own changes on SIGTERM; give it time to say goodbye to the exit.
            let raw = i32::try_from(pid).context("bad pid in the lock file")?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGTERM)
                .with_context(|| format!("cannot signal the running smolmix-vpn (pid {pid})"))?;
            for _ in 0..100 {
                if !lock::held(run_dir) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if lock::held(run_dir) {
                bail!("smolmix-vpn (pid {pid}) did not stop within 10 s");
            }
            stopped = true;
        }
        pending = journal::load(run_dir).map(|u| u.len()).unwrap_or(0);
        failures = host::recover(run_dir, &dns_paths(state_dir).journal_context());
        status::remove(run_dir);
    }
    let restored = match recover_state(state_dir) {
        Ok(r) => r,
        Err(e) => {
            failures.push(e);
            false
        }
    };
    if !failures.is_empty() {
        bail!("some changes could not be undone:\n  {}", failures.join("\n  "));
    }
    match (stopped, pending, restored) {
        (true, ..) => println!("stopped the running tunnel; host restored"),
        (false, 0, false) => println!("nothing to undo"),
        (false, 0, true) => {
            println!("restored {} from the backup an earlier run left (a reboot while up?)", resolv_conf().display())
        }
        (false, n, _) => println!("undid {n} changes left by an earlier run"),
    }
    Ok(())
}

/// When systemd runs us as a unit's ExecStopPost it says how the service ended
/// (systemd.exec(5), "Environment variables in spawned processes": `SERVICE_RESULT`,
/// `EXIT_CODE`, `EXIT_STATUS`). `None`: a clean end (`success`) or not run by systemd;
/// otherwise how it ended, for the message.
fn service_did_not_stop_cleanly() -> Option<String> {
    let result = std::env::var("SERVICE_RESULT").ok()?;
    if result == "success" {
        return None;
    }
    let code = std::env::var("EXIT_CODE").unwrap_or_default();
    let status = std::env::var("EXIT_STATUS").unwrap_or_default();
    Some(if code.is_empty() { result } else { format!("{result} ({code} {status})") })
}

/// The host's resolver file, whose backup may outlive the run dir.
fn resolv_conf() -> PathBuf {
    system::dns::DnsPaths::default().resolv_conf
}

/// The resolver files of `up` with `state_dir`, as `UpConfig::dns_paths` makes them: what a
/// journal may name (host.rs `recover`) and where a backup may wait.
fn dns_paths(state_dir: &Path) -> system::dns::DnsPaths {
    system::dns::DnsPaths { backup_dir: state_dir.to_path_buf(), ..Default::default() }
}

/// Restores resolv.conf from a backup the journal no longer knows of (dns.rs); refuses a
/// state dir others could have written, as for the run dir.
fn recover_state(state_dir: &Path) -> std::result::Result<bool, String> {
    if std::fs::symlink_metadata(state_dir).is_err() {
        return Ok(false);
    }
    lock::check(state_dir).map_err(|e| e.to_string())?;
    dns_paths(state_dir).recover_backup()
}

fn cmd_status(run_dir: &Path, json: bool) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Err(e) = std::fs::read_dir(run_dir) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            bail!("cannot read {} (it is root's alone): run `sudo smolmix-vpn status`", run_dir.display());
        }
    }
    let st = status::read(run_dir);
    // No status file, no `up`, but a journal: the boot-time lockdown (`block`), or an `up` that
    // died before its first status: the host is closed.
    let blocked = st.is_none() && !lock::held(run_dir) && journal::load(run_dir).is_ok_and(|u| !u.is_empty());
    if json {
        let v = match &st {
            Some(s) => serde_json::to_value(s)?,
            None if lock::held(run_dir) => serde_json::json!({ "state": "connecting" }),
            None if blocked => serde_json::json!({ "state": "blocked" }),
            None => serde_json::json!({ "state": "disconnected" }),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return emit(&out);
    }
    match st {
        // `up` is alive but has not written a status yet: it is still connecting.
        None if lock::held(run_dir) => writeln!(out, "state: connecting")?,
        None if blocked => {
            writeln!(out, "state:     blocked")?;
            writeln!(out, "           nothing leaves the host but through the tunnel, which is not up: `sudo smolmix-vpn up` connects, `sudo smolmix-vpn down` opens the host")?;
        }
        None => writeln!(out, "state: disconnected")?,
        Some(s) => {
            writeln!(out, "state:     {}", s.state)?;
            if s.state == State::Blocked {
                writeln!(out, "           nothing leaves the host but through the tunnel, which is gone: `sudo smolmix-vpn down` restores it")?;
            }
            if s.state == State::Connecting && s.netns.is_none() && journal::load(run_dir).is_ok_and(|u| !u.is_empty())
            {
                writeln!(out, "           blocked until connected: nothing leaves the host but through the tunnel; `sudo smolmix-vpn down` opens it")?;
            }
            // While (re)connecting, what it is waiting for; the last connect's steps otherwise
            // are in --json.
            if matches!(s.state, State::Connecting | State::Reconnecting) {
                for step in &s.progress {
                    writeln!(out, "  {step}")?;
                }
            }
            if s.state == State::Connecting {
                writeln!(out, "exit:      {}", s.exit)?;
                return emit(&out);
            }
            writeln!(out, "exit:      {} (IPR v{})", s.exit, s.version.map_or("?".into(), |v| v.to_string()))?;
            writeln!(out, "interface: {} mtu {}", s.tun, s.mtu.map_or("?".into(), |m| m.to_string()))?;
            writeln!(out, "local:     {} {}", s.local_ipv4, s.local_ipv6)?;
            writeln!(
                out,
                "allocated: {} {}",
                s.allocated_ipv4.as_deref().unwrap_or("-"),
                s.allocated_ipv6.as_deref().unwrap_or("-")
            )?;
            if let Some(ns) = &s.netns {
                writeln!(out, "namespace: {ns} (run programs there with `smolmix-vpn exec -- CMD`)")?;
            }
            match (&s.dns_mode, s.dns.is_empty()) {
                (Some(mode), false) => writeln!(out, "dns:       {} ({mode})", s.dns.join(" "))?,
                _ => writeln!(out, "dns:       left alone")?,
            }
            if let Some(check) = &s.dns_check {
                writeln!(out, "dns check: {check}")?;
            }
            if let Some(peer) = s.counters["transport_peer"].as_str() {
                // The live socket's peer: the entry gateway, or a local exit.
                writeln!(out, "via:       {peer}")?;
            }
            writeln!(out, "reconnects: {}", s.reconnects)?;
            for line in s.mixnet_summary() {
                writeln!(out, "{line}")?;
            }
            // Non-zero counters only, one line per stage: zeros are the normal case and noise.
            if let Some(stages) = s.counters.as_object() {
                for (stage, counters) in stages.iter().filter(|(_, c)| c.is_object()) {
                    let nonzero: Vec<String> = counters
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(_, v)| v.as_u64().is_some_and(|n| n != 0))
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    writeln!(out, "{:<10} {}", format!("{stage}:"), nonzero.join(" "))?;
                }
            }
        }
    }
    emit(&out)
}

/// `man --dir`: the pages, one per line of output, for a packager's script to pick up.
fn cmd_man_dir(dir: &Path) -> Result<()> {
    let written =
        manual::write_man_pages(dir).with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    emit(&written.iter().map(|p| format!("{}\n", p.display())).collect::<String>())
}

/// Prints `text`; a reader that went away (`status | head -1`) is not an error worth a panic.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}
