//! The `smolmix-vpn` command line (its fixed interface: docs/design.md §3.1).
//!
//! Everything a user can get wrong is rejected here, by clap's value parsers or by
//! [`UpArgs::validate`], before the first change to the host: a typo must never leave a
//! half-configured tunnel behind. `up`'s saved profiles are read, checked and laid under the
//! command line by [`profile`], with the same parsers and ranges as here.

pub mod profile;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::system::netns;
use crate::system::routes::Cidr;
use crate::transport::{IprAddr, OpenOptions, TrafficProfile};

/// Default TUN name (docs/design.md §3.1).
pub const DEFAULT_TUN: &str = "smx0";
/// The run dir when neither `--run-dir` nor `SMOLMIX_RUN_DIR` says otherwise; the only one
/// `exec` uses under sudo (smolmix-vpn.rs `cmd_exec`).
pub const DEFAULT_RUN_DIR: &str = "/run/smolmix-vpn";
/// The state dir when neither `--state-dir` nor `SMOLMIX_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/smolmix-vpn";
/// Linux interface names are at most 15 bytes (IFNAMSIZ − 1).
const IFNAMSIZ_MAX: usize = 15;
/// IPv6 requires 1280 (RFC 8200 §5); below 576 IPv4 itself breaks (RFC 791).
const MIN_MTU: u16 = crate::pipeline::IPV6_MIN_MTU;
/// The IPR's bundles carry packets behind a u16 length prefix (docs/ipr-protocol.md §2.1).
const MAX_MTU: u16 = 65535;
/// `--surbs` (1-100, its help says): at least one, or the exit could not answer at all.
const MIN_SURBS: u32 = 1;
/// The upper bound of `--surbs`: spare SURBs beyond what replies use are only overhead.
const MAX_SURBS: u32 = 100;
/// DNS servers when `--dns` is not given: Quad9 (no logging of client addresses, DNSSEC
/// validating). They must be public: the IPR only forwards to global destinations
/// (docs/ipr-protocol.md §5.2 step 5, §7 item 9), so a LAN or loopback resolver cannot be reached
/// through the tunnel.
pub const DEFAULT_DNS: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)),
    IpAddr::V4(Ipv4Addr::new(149, 112, 112, 112)),
    IpAddr::V6(Ipv6Addr::new(0x2620, 0xfe, 0, 0, 0, 0, 0, 0xfe)),
];

/// The `smolmix-vpn` command line: global options and one subcommand.
#[derive(Debug, Parser)]
#[command(name = "smolmix-vpn", version, about = "Tunnel a Linux host, or one application, through the Nym mixnet")]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Where the journal of host changes and the status file live (not for `exec` under sudo).
    #[arg(long, global = true, env = "SMOLMIX_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    /// Where what must survive a reboot lives: the backup of /etc/resolv.conf, restored by
    /// `down` (or the next `up`) even when a power loss took the run dir's journal.
    #[arg(long, global = true, env = "SMOLMIX_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Where `up NAME` looks for the saved profile NAME.toml.
    #[arg(long, global = true, env = "SMOLMIX_PROFILE_DIR", default_value = profile::DEFAULT_PROFILE_DIR)]
    pub profile_dir: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per run: boxing `up`'s options would save nothing")]
pub enum Command {
    /// Bring the tunnel up and stay in the foreground; SIGINT/SIGTERM undo every change.
    Up(UpArgs),
    /// Close the host as `up` would before it connects (the full tunnel's kill switch), then
    /// exit: nothing leaves but through the tunnel until `up` takes over or `down` opens it.
    /// For boot, before the network comes up (smolmix-vpn-lockdown@.service).
    Block(UpArgs),
    /// Undo everything a previous `up` changed, also after a crash. Idempotent.
    Down {
        /// For the systemd unit's ExecStopPost: leave a running `up` alone (a second instance
        /// that failed at the lock must not stop the first one's tunnel), and after an `up`
        /// that did not end by a deliberate stop (systemd's SERVICE_RESULT other than
        /// `success`: a crash, a kill, an error) keep the host closed; undo only after a
        /// clean end.
        #[arg(long)]
        stale: bool,
    },
    /// Show state, addresses, exit and counters.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside the namespace of `up --netns`: as the invoking user, without
    /// capabilities, with the tunnel's DNS and no access to the host's resolver sockets.
    Exec(ExecArgs),
    /// List IPR exits from the Nym directory: address, version, performance.
    Exits {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Where the Nym directory is.
        #[command(flatten)]
        directory: DirectoryArgs,
    },
    /// Print the shell completion script for SHELL to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page smolmix-vpn(1) (roff) to stdout, or write it and one page per
    /// subcommand into DIR.
    Man {
        /// Write smolmix-vpn.1 and smolmix-vpn-SUBCOMMAND.1 into DIR instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Where the Nym directory is (tests and private networks point it elsewhere).
#[derive(Debug, Clone, clap::Args)]
pub struct DirectoryArgs {
    /// nym-api URL of the Nym directory (repeatable; default: mainnet's).
    #[arg(long = "nym-api", value_name = "URL")]
    pub nym_api: Vec<String>,
}

impl DirectoryArgs {
    /// The mixnet's options with this directory (the defaults otherwise).
    #[cfg(feature = "mixnet")]
    pub fn mixnet_options(&self) -> crate::transport::mixnet::MixnetOptions {
        let mut opts = crate::transport::mixnet::MixnetOptions::default();
        if !self.nym_api.is_empty() {
            opts.nym_api_urls = self.nym_api.clone();
        }
        opts
    }
}

/// A switch on the command line: `on` or `off`. Its variants carry no docs on purpose: clap
/// would print them in `--help` beside the option's own text, which already says what each means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum OnOff {
    On,
    Off,
}

/// The options of `up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The saved profile to start from (`up NAME` or `up --profile NAME`).
    #[command(flatten)]
    pub profile: profile::ProfileArgs,

    /// IPR exit: a Nym address, or udp://HOST:PORT for a local smolmix-exit.
    #[arg(long, value_name = "ADDR")]
    pub ipr: Option<IprAddr>,

    /// Tunnel only these destinations (repeatable; default 0.0.0.0/0 and ::/0).
    #[arg(long = "route", value_name = "CIDR")]
    pub routes: Vec<Cidr>,

    /// Keep these destinations off the tunnel (repeatable).
    #[arg(long = "exclude", value_name = "CIDR")]
    pub excludes: Vec<Cidr>,

    /// With the full tunnel's kill switch: still reach local networks (RFC 1918, link-local,
    /// multicast, fc00::/7) directly, e.g. a printer or a NAS.
    #[arg(long)]
    pub allow_lan: bool,

    /// IPv6 through the tunnel (on, when the exit allocates an address) or blocked (off).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub ipv6: OnOff,

    /// TUN interface name.
    #[arg(long, default_value = DEFAULT_TUN)]
    pub tun: String,

    /// Override the MTU learnt from the IPR.
    #[arg(long, value_parser = clap::value_parser!(u16).range(MIN_MTU as i64..=MAX_MTU as i64))]
    pub mtu: Option<u16>,

    /// Mixnet traffic profile (fast: high-traffic profile). Ignored by udp:// exits.
    #[arg(long, value_enum, default_value_t = TrafficProfile::Default)]
    pub traffic: TrafficProfile,

    /// Reply SURBs the exit holds in hand beyond its reserve even when idle (1-100); more are
    /// sent as its replies need them (it can only answer through them). Ignored by udp:// exits.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(MIN_SURBS as i64..=MAX_SURBS as i64))]
    pub surbs: u32,

    /// Keep the mixnet identity (keys, gateway registration) in DIR; default: a new one per run.
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,

    /// Where the Nym directory is.
    #[command(flatten)]
    pub directory: DirectoryArgs,

    /// DNS servers reached through the tunnel (repeatable).
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<IpAddr>,

    /// Leave DNS configuration alone.
    #[arg(long, conflicts_with = "dns")]
    pub no_dns: bool,

    /// Name looked up through the tunnel after connecting, to check that DNS works.
    #[arg(long, value_name = "NAME", default_value = "nymtech.net")]
    pub dns_check_name: String,

    /// Per-app mode: put the TUN into network namespace NAME (created if missing) and leave
    /// the host's routes and DNS alone; start programs there with `smolmix-vpn exec`.
    #[arg(long, value_name = "NAME", value_parser = parse_netns, conflicts_with_all = ["routes", "excludes"])]
    pub netns: Option<String>,
}

/// The options of `exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Namespace of a running `up --netns` (default: the one it uses).
    #[arg(long, value_name = "NAME", value_parser = parse_netns)]
    pub netns: Option<String>,

    /// User to run as, name or uid (default: the user who invoked sudo; under sudo, only that
    /// user).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// The program and its arguments (default: the user's login shell).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Whether `name` is an interface name the kernel takes and that cannot mean a path.
fn tun_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name != "."
        && name != ".."
}

fn parse_netns(s: &str) -> Result<String, String> {
    netns::validate_name(s).map(|()| s.to_string()).map_err(|e| e.to_string())
}

/// A semantic error in the arguments, found before anything on the host changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    /// `--tun` is not a valid interface name.
    #[error("--tun {0:?}: an interface name is 1 to 15 characters of letters, digits, '-', '_' or '.'")]
    BadTunName(String),
    /// An `--exclude` of prefix length 0 would leave nothing to tunnel.
    #[error("--exclude {0} excludes every destination; use --route to choose what is tunnelled")]
    ExcludeAll(Cidr),
    /// An IPv6 `--route` with `--ipv6 off`.
    #[error("--route {0} is IPv6 but --ipv6 off blocks IPv6")]
    V6RouteWithV6Off(Cidr),
    /// An IPv6 `--dns` server with `--ipv6 off`.
    #[error("--dns {0} is IPv6 but --ipv6 off blocks IPv6")]
    V6DnsWithV6Off(IpAddr),
    /// A DNS server (given or default) inside an `--exclude`d prefix.
    #[error("--dns {0} is inside --exclude {1}: DNS would leave outside the tunnel")]
    DnsExcluded(IpAddr, Cidr),
}

impl UpArgs {
    /// How to open the transport to the exit (the routing mark is the driver's to set).
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            mark: None,
            progress: Default::default(),
            #[cfg(feature = "mixnet")]
            mixnet: crate::transport::mixnet::MixnetOptions {
                traffic: self.traffic,
                reply_surbs: self.surbs,
                storage_dir: self.identity_dir.clone(),
                ..self.directory.mixnet_options()
            },
        }
    }

    /// Checks that clap's per-value parsers cannot express.
    pub fn validate(&self) -> Result<(), ArgError> {
        if !tun_name_ok(&self.tun) {
            return Err(ArgError::BadTunName(self.tun.clone()));
        }
        if let Some(c) = self.excludes.iter().find(|c| c.prefix_len() == 0) {
            return Err(ArgError::ExcludeAll(*c));
        }
        if self.ipv6 == OnOff::Off {
            if let Some(c) = self.routes.iter().find(|c| c.is_ipv6()) {
                return Err(ArgError::V6RouteWithV6Off(*c));
            }
            if let Some(d) = self.dns.iter().find(|d| d.is_ipv6()) {
                return Err(ArgError::V6DnsWithV6Off(*d));
            }
        }
        for d in self.effective_dns().unwrap_or_default() {
            if let Some(c) = self.excludes.iter().find(|c| c.contains(d)) {
                return Err(ArgError::DnsExcluded(d, *c));
            }
        }
        Ok(())
    }

    /// The DNS servers to use through the tunnel; `None` with `--no-dns`. Without `--dns`,
    /// [`DEFAULT_DNS`] (its IPv6 server only when IPv6 is on).
    pub fn effective_dns(&self) -> Option<Vec<IpAddr>> {
        if self.no_dns {
            return None;
        }
        if !self.dns.is_empty() {
            return Some(self.dns.clone());
        }
        Some(DEFAULT_DNS.into_iter().filter(|d| self.ipv6 == OnOff::On || d.is_ipv4()).collect())
    }

    /// The destinations to tunnel, defaulting to everything.
    pub fn effective_routes(&self) -> Vec<Cidr> {
        if self.routes.is_empty() {
            vec![Cidr::ANY_V4, Cidr::ANY_V6]
        } else {
            self.routes.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("smolmix-vpn").chain(args.iter().copied()))
    }

    fn up(args: &[&str]) -> UpArgs {
        match parse(args).expect("parses").command {
            Command::Up(a) => a,
            other => panic!("not up: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let a = up(&["up", "--ipr", "udp://192.0.2.1:51820"]);
        assert_eq!(a.tun, "smx0");
        assert_eq!(a.surbs, 4);
        assert_eq!(a.effective_routes(), vec![Cidr::ANY_V4, Cidr::ANY_V6]);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn rejects_bad_values_before_anything_runs() {
        for bad in [
            &["up", "--route", "10.0.0.0/33"][..],
            &["up", "--route", "nonsense"],
            &["up", "--exclude", "::/129"],
            &["up", "--mtu", "100"],
            &["up", "--mtu", "70000"],
            &["up", "--ipv6", "maybe"],
            &["up", "--ipr", "udp://"],
            &["up", "--ipr", "tcp://1.2.3.4:5"],
            &["up", "--dns", "1.1.1.1", "--no-dns"],
            &["up", "--surbs", "1000"],
            &["up", "--surbs", "0"],
            &["up", "--netns", "a/b"],
            &["up", "--netns", "app", "--route", "192.0.2.0/24"],
            &["up", "--netns", "app", "--exclude", "192.0.2.0/24"],
            &["exec", "--netns", "../x", "--", "sh"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn semantic_validation() {
        assert_eq!(
            up(&["up", "--tun", "this-name-is-too-long"]).validate(),
            Err(ArgError::BadTunName("this-name-is-too-long".into()))
        );
        assert!(matches!(up(&["up", "--tun", "a/b"]).validate(), Err(ArgError::BadTunName(_))));
        assert!(matches!(up(&["up", "--exclude", "0.0.0.0/0"]).validate(), Err(ArgError::ExcludeAll(_))));
        assert!(matches!(
            up(&["up", "--ipv6", "off", "--route", "2001:db8::/32"]).validate(),
            Err(ArgError::V6RouteWithV6Off(_))
        ));
        assert!(up(&["up", "--route", "192.0.2.0/24", "--exclude", "192.0.2.7/32"]).validate().is_ok());
        assert!(matches!(
            up(&["up", "--ipv6", "off", "--dns", "2001:db8::53"]).validate(),
            Err(ArgError::V6DnsWithV6Off(_))
        ));
        assert!(matches!(
            up(&["up", "--dns", "192.0.2.53", "--exclude", "192.0.2.0/24"]).validate(),
            Err(ArgError::DnsExcluded(..))
        ));
        // The default servers are checked too: excluding Quad9 would leak every lookup.
        assert!(matches!(up(&["up", "--exclude", "9.9.9.0/24"]).validate(), Err(ArgError::DnsExcluded(..))));
        assert!(up(&["up", "--no-dns", "--exclude", "9.9.9.0/24"]).validate().is_ok());
    }

    #[test]
    fn dns_defaults_follow_ipv6() {
        assert_eq!(up(&["up"]).effective_dns().unwrap(), DEFAULT_DNS.to_vec());
        assert!(up(&["up", "--ipv6", "off"]).effective_dns().unwrap().iter().all(IpAddr::is_ipv4));
        assert_eq!(up(&["up", "--no-dns"]).effective_dns(), None);
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(up(&["up", "--dns", "192.0.2.2"]).effective_dns(), Some(vec![ip]));
    }

    #[test]
    fn exec_takes_the_rest_verbatim() {
        let Command::Exec(a) = parse(&["exec", "--user", "1000", "--", "curl", "-v", "--netns", "x"]).unwrap().command
        else {
            panic!("not exec")
        };
        assert_eq!(a.user.as_deref(), Some("1000"));
        assert_eq!(a.netns, None);
        assert_eq!(a.command, ["curl", "-v", "--netns", "x"].map(OsString::from));
        let Command::Up(u) = parse(&["up", "--netns", "app"]).unwrap().command else { panic!("not up") };
        assert_eq!(u.netns.as_deref(), Some("app"));
    }
}
