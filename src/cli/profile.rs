//! `up`'s saved profiles: `/etc/smolmix-vpn/NAME.toml`, used by `up NAME` or `up --profile NAME`.
//!
//! A profile holds `up`'s options under their long names (`mtu = 1400`, `route = ["10.0.0.0/8"]`,
//! `no-dns = true`); `examples/profiles/example.toml` shows every key. This module owns finding
//! the file, refusing one that someone other than root could have written, parsing it with the
//! same parsers and ranges as the command line (one definition of each, in `cli`), and laying
//! the command line over it. The rules, all checked before anything on the host changes:
//!
//! - Every key is checked where it stands: a rejection names the file, the line and the key
//!   (`/etc/smolmix-vpn/work.toml:3: key "mtu": 100 is not in 1280..=65535`); an element of a
//!   list spread over several lines is named at its own line.
//! - A profile must make sense on its own, as if it were the whole command line: keys the
//!   command line cannot combine (`dns` and `no-dns`, `netns` and `route`/`exclude`) cannot be
//!   combined in a profile either, and [`UpArgs::validate`] must accept it.
//! - An option given on the command line (or through its environment variable) replaces the
//!   profile's value; a repeatable one replaces the whole list. `--dns` and `--no-dns` are two
//!   spellings of one setting, so either replaces both keys. `--netns` against a profile's
//!   `route`/`exclude` (or the other way round) is refused: they are different setups, and
//!   guessing which one was meant could send traffic where the user did not expect.
//! - `up NAME` and `up --profile NAME` are the same; giving both is an error (clap's).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};
use toml::Spanned;

use super::{ArgError, OnOff, UpArgs, MAX_MTU, MAX_SURBS, MIN_MTU, MIN_SURBS};
use crate::system::netns;
use crate::transport::TrafficProfile;

mod trust;
mod value;

use value::{Bad, Raw, Setting};

/// Where `up NAME` looks for `NAME.toml` unless told otherwise (`--profile-dir`).
pub const DEFAULT_PROFILE_DIR: &str = "/etc/smolmix-vpn";
/// A profile's file name is NAME plus this.
const EXTENSION: &str = "toml";
/// NAME_MAX (255) less ".toml".
const MAX_NAME: usize = 250;

/// `up`'s choice of profile.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProfileArgs {
    /// Start from the saved profile NAME: <profile-dir>/NAME.toml, or the file NAME if it
    /// contains a '/'. Options given here override the profile's.
    #[arg(long = "profile", value_name = "NAME", conflicts_with = "profile_name")]
    pub profile: Option<String>,

    /// Same as --profile NAME.
    #[arg(value_name = "PROFILE")]
    pub profile_name: Option<String>,
}

impl ProfileArgs {
    /// The profile asked for, either way.
    pub fn name(&self) -> Option<&str> {
        self.profile.as_deref().or(self.profile_name.as_deref())
    }
}

/// Why a profile cannot be used. Every variant names the file (or the name asked for).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The name is not a plain name and has no '/' to make it a path.
    #[error("profile {0:?}: a profile name is letters, digits, '-', '_' and '.' (not first), for <profile-dir>/NAME.toml; give a path with a '/' (./{0}) for a file elsewhere")]
    BadName(String),
    /// No such file; what the directory holds instead.
    #[error("no profile {}: {}", path.display(), available_text(dir.as_deref(), available))]
    NotFound {
        /// The file looked for.
        path: PathBuf,
        /// The profile directory, when the profile was asked for by name.
        dir: Option<PathBuf>,
        /// The profiles in `dir`, sorted.
        available: Vec<String>,
    },
    /// The file could not be read.
    #[error("cannot read profile {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Someone other than root can change the file, or a directory above it.
    #[error("{}", trust::explain(path, who))]
    Untrusted {
        /// The file, or the directory above it at fault.
        path: PathBuf,
        /// Who besides root can change it ("uid 1000 owns it", "everyone can write to it").
        who: String,
    },
    /// Not TOML.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// The TOML parser's message.
        message: String,
    },
    /// A key that is not one of `up`'s options, or a bad value for one.
    #[error("{}:{line}: key {key:?}: {message}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key, or of the offending element of a list.
        line: usize,
        /// The key as written.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Each part is fine, but the command line and the profile together are not.
    #[error("{source} (the command line with profile {})", path.display())]
    Combined {
        /// The file.
        path: PathBuf,
        /// What `UpArgs::validate` said of the merged options.
        source: ArgError,
    },
}

fn available_text(dir: Option<&Path>, available: &[String]) -> String {
    match dir {
        None => "no such file".into(),
        Some(d) if !d.is_dir() => format!("{} does not exist (--profile-dir, SMOLMIX_PROFILE_DIR)", d.display()),
        Some(d) if available.is_empty() => format!("{} holds no profiles (NAME.{EXTENSION})", d.display()),
        Some(d) => format!("the profiles in {} are: {}", d.display(), available.join(", ")),
    }
}

/// Applies the profile `args` names, if any, under the command line `matches` (those of `up`):
/// the options `up` should run with. See the module doc for the rules.
pub fn resolve(args: UpArgs, matches: &ArgMatches, dir: &Path) -> Result<UpArgs, ProfileError> {
    let Some(name) = args.profile.name() else {
        return Ok(args);
    };
    load(name, dir)?.apply(args, matches)
}

/// Finds, checks and parses the profile NAME (or the file NAME, if it contains a '/').
pub fn load(name: &str, dir: &Path) -> Result<Profile, ProfileError> {
    let (path, lookup_dir) = locate(name, dir)?;
    // Without root (CAP_NET_ADMIN alone), whoever runs `up` is trusted with its options anyway.
    let real = if nix::unistd::geteuid().is_root() { trust::check(&path)? } else { path.clone() };
    let text = match std::fs::read_to_string(&real) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let available = lookup_dir.as_deref().map(list).unwrap_or_default();
            return Err(ProfileError::NotFound { path, dir: lookup_dir, available });
        }
        Err(source) => return Err(ProfileError::Read { path, source }),
    };
    Profile::parse(&path, &text)
}

/// The file a profile name stands for, and the directory it was looked up in (`None` for a path).
fn locate(name: &str, dir: &Path) -> Result<(PathBuf, Option<PathBuf>), ProfileError> {
    if name.contains('/') {
        return Ok((PathBuf::from(name), None));
    }
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain {
        return Err(ProfileError::BadName(name.into()));
    }
    Ok((dir.join(format!("{name}.{EXTENSION}")), Some(dir.to_path_buf())))
}

/// The profile names in `dir` (files NAME.toml with a plain NAME), sorted.
fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(&format!(".{EXTENSION}")).map(str::to_string))
        .filter(|n| locate(n, dir).is_ok())
        .collect();
    names.sort();
    names
}

/// A parsed profile whose every key and value is known good, alone and together.
#[derive(Debug, Clone)]
pub struct Profile {
    path: PathBuf,
    text: String,
    /// In the file's order.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: &'static Key,
    /// The key's own span (its line is the one named for errors that concern the whole key).
    key_span: Range<usize>,
    value: Raw,
}

impl Profile {
    /// Parses and checks `text`, the contents of `path` (named in errors only).
    pub fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
        let syntax = |e: toml::de::Error| ProfileError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim_end().to_string(),
        };
        let table: BTreeMap<Spanned<String>, Raw> = toml::from_str(text).map_err(syntax)?;
        let mut table: Vec<_> = table.into_iter().collect();
        // The map is in key order; errors are reported in the file's.
        table.sort_by_key(|(name, _)| name.span().start);
        let mut entries = Vec::with_capacity(table.len());
        for (name, value) in table {
            let Some(key) = KEYS.iter().find(|k| k.name == name.get_ref()) else {
                let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
                return Err(ProfileError::Key {
                    path: path.to_path_buf(),
                    line: line_of(text, name.span().start),
                    key: name.into_inner(),
                    message: format!("not an option of `up`; the keys are: {}", known.join(", ")),
                });
            };
            entries.push(Entry { key, key_span: name.span(), value });
        }
        let profile = Profile { path: path.to_path_buf(), text: text.to_string(), entries };
        profile.check_alone()?;
        Ok(profile)
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options `up` runs with: the profile's, except where `matches` (of `up`) says the
    /// user gave one on the command line.
    pub fn apply(&self, mut args: UpArgs, matches: &ArgMatches) -> Result<UpArgs, ProfileError> {
        let given =
            |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        for e in &self.entries {
            if given(e.key.id) || e.key.replaced_by.is_some_and(given) {
                continue;
            }
            if let Some(other) = e.key.conflicts.iter().filter_map(|c| key(c)).find(|k| given(k.id)) {
                return Err(self.key_error(
                    e,
                    None,
                    format!("cannot be combined with --{} on the command line; drop one of them", other.name),
                ));
            }
            (e.key.apply)(&mut args, &self.value(e)).map_err(|bad| self.key_error(e, Some(bad.at), bad.message))?;
        }
        args.validate().map_err(|source| ProfileError::Combined { path: self.path.clone(), source })?;
        Ok(args)
    }

    /// A profile alone must be a valid command line.
    fn check_alone(&self) -> Result<(), ProfileError> {
        for e in &self.entries {
            if let Some(other) = e.key.conflicts.iter().find_map(|c| self.entries.iter().find(|o| o.key.name == *c)) {
                let line = line_of(&self.text, other.key_span.start);
                return Err(self.key_error(
                    e,
                    None,
                    format!("cannot be combined with key {:?} (line {line}); drop one of them", other.key.name),
                ));
            }
        }
        let (defaults, matches) = defaults();
        self.apply(defaults, &matches).map(drop).map_err(|e| match e {
            ProfileError::Combined { source, .. } => self.blame(source),
            other => other,
        })
    }

    /// Names the key behind a semantic error of the profile alone.
    fn blame(&self, err: ArgError) -> ProfileError {
        let culprit = match &err {
            ArgError::BadTunName(_) => "tun",
            ArgError::ExcludeAll(_) => "exclude",
            // The profile's own servers, or the default ones its `exclude` catches.
            ArgError::DnsExcluded(..) if self.entry("dns").is_none() => "exclude",
            ArgError::DnsExcluded(..) | ArgError::V6DnsWithV6Off(_) => "dns",
            ArgError::V6RouteWithV6Off(_) => "route",
        };
        match self.entry(culprit) {
            Some(e) => self.key_error(e, None, err.to_string()),
            // Unreachable: the defaults are valid, so a key of the profile is at fault.
            None => ProfileError::Combined { path: self.path.clone(), source: err },
        }
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.name == name)
    }

    fn value<'a>(&'a self, e: &'a Entry) -> Setting<'a> {
        Setting::new(e.key_span.start, &e.value)
    }

    fn key_error(&self, e: &Entry, at: Option<usize>, message: String) -> ProfileError {
        ProfileError::Key {
            path: self.path.clone(),
            line: line_of(&self.text, at.unwrap_or(e.key_span.start)),
            key: e.key.name.to_string(),
            message,
        }
    }
}

/// `up`'s options and their sources with nothing given: what a profile alone is laid over.
fn defaults() -> (UpArgs, ArgMatches) {
    let cmd = <UpArgs as clap::Args>::augment_args(clap::Command::new("up").no_binary_name(true));
    // Every option of `up` is optional (cli/mod.rs's tests parse a bare `up`), so this cannot fail.
    let matches = cmd.try_get_matches_from(std::iter::empty::<&str>()).expect("`up` alone parses");
    (UpArgs::from_arg_matches(&matches).expect("`up` alone parses"), matches)
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count()
}

/// One key of a profile: the long option it stands for and how its value lands in [`UpArgs`].
#[derive(Debug)]
struct Key {
    /// The key, which is the long option's name.
    name: &'static str,
    /// The option's clap id (the field of [`UpArgs`]).
    id: &'static str,
    /// Another clap id that, given on the command line, also replaces this key.
    replaced_by: Option<&'static str>,
    /// Keys this one cannot be combined with, in the profile or on the command line.
    conflicts: &'static [&'static str],
    apply: fn(&mut UpArgs, &Setting<'_>) -> Result<(), Bad>,
}

fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Every option of `up` (a test checks this against clap's definition of `up`).
static KEYS: [Key; 15] = [
    plain("ipr", "ipr", |a, v| {
        a.ipr = Some(v.parse()?);
        Ok(())
    }),
    Key {
        conflicts: &["netns"],
        ..plain("route", "routes", |a, v| {
            a.routes = v.list()?;
            Ok(())
        })
    },
    Key {
        conflicts: &["netns"],
        ..plain("exclude", "excludes", |a, v| {
            a.excludes = v.list()?;
            Ok(())
        })
    },
    plain("allow-lan", "allow_lan", |a, v| {
        a.allow_lan = v.bool()?;
        Ok(())
    }),
    plain("ipv6", "ipv6", |a, v| {
        a.ipv6 = v.choice::<OnOff>()?;
        Ok(())
    }),
    plain("tun", "tun", |a, v| {
        let name = v.str()?;
        if !super::tun_name_ok(name) {
            return Err(v.bad(ArgError::BadTunName(name.into()).to_string()));
        }
        a.tun = name.into();
        Ok(())
    }),
    plain("mtu", "mtu", |a, v| {
        a.mtu = Some(v.int_in(MIN_MTU, MAX_MTU)?);
        Ok(())
    }),
    plain("traffic", "traffic", |a, v| {
        a.traffic = v.choice::<TrafficProfile>()?;
        Ok(())
    }),
    plain("surbs", "surbs", |a, v| {
        a.surbs = v.int_in(MIN_SURBS, MAX_SURBS)?;
        Ok(())
    }),
    plain("identity-dir", "identity_dir", |a, v| {
        let dir = PathBuf::from(v.str()?);
        // The command line's relative path is relative to where the user stands; a profile's
        // would depend on where `up` happened to be started (a service's is "/").
        if !dir.is_absolute() {
            return Err(v.bad(format!("{:?} is relative; a profile's paths must be absolute", dir.display())));
        }
        a.identity_dir = Some(dir);
        Ok(())
    }),
    plain("nym-api", "nym_api", |a, v| {
        a.directory.nym_api = v.list()?;
        Ok(())
    }),
    Key {
        replaced_by: Some("no_dns"),
        conflicts: &["no-dns"],
        ..plain("dns", "dns", |a, v| {
            a.dns = v.list()?;
            Ok(())
        })
    },
    Key {
        replaced_by: Some("dns"),
        conflicts: &["dns"],
        ..plain("no-dns", "no_dns", |a, v| {
            a.no_dns = v.bool()?;
            Ok(())
        })
    },
    plain("dns-check-name", "dns_check_name", |a, v| {
        a.dns_check_name = v.str()?.into();
        Ok(())
    }),
    Key {
        conflicts: &["route", "exclude"],
        ..plain("netns", "netns", |a, v| {
            let name = v.str()?;
            netns::validate_name(name).map_err(|e| v.bad(e.to_string()))?;
            a.netns = Some(name.into());
            Ok(())
        })
    },
];

/// A key that conflicts with no other.
const fn plain(name: &'static str, id: &'static str, apply: fn(&mut UpArgs, &Setting<'_>) -> Result<(), Bad>) -> Key {
    Key { name, id, replaced_by: None, conflicts: &[], apply }
}

#[cfg(test)]
mod tests;
