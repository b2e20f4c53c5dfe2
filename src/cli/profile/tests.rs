//! Profiles: every key, every rejection with its line, and how the command line overrides.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::cli::{Cli, Command};
use crate::system::routes::Cidr;
use crate::transport::IprAddr;

const PATH: &str = "/etc/smolmix-vpn/t.toml";

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::parse(Path::new(PATH), text)
}

/// The rejection of `text`, as the user reads it.
fn rejection(text: &str) -> String {
    match parse(text) {
        Ok(p) => panic!("accepted: {text:?} -> {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// `(line, key)` of a rejected key.
fn where_rejected(text: &str) -> (usize, String) {
    match parse(text) {
        Err(ProfileError::Key { line, key, path, .. }) => {
            assert_eq!(path, Path::new(PATH));
            (line, key)
        }
        other => panic!("{text:?}: not a key error: {other:?}"),
    }
}

/// `smolmix-vpn ARGS`'s `up` options and their matches.
fn cli(args: &[&str]) -> (UpArgs, ArgMatches) {
    let m = Cli::command().try_get_matches_from(std::iter::once("smolmix-vpn").chain(args.iter().copied())).unwrap();
    let Command::Up(up) = Cli::from_arg_matches(&m).unwrap().command else { panic!("not up") };
    (up, m.subcommand_matches("up").unwrap().clone())
}

/// `up ARGS` over the profile `text`.
fn merged(text: &str, args: &[&str]) -> Result<UpArgs, ProfileError> {
    let (up, m) = cli(&[&["up"], args].concat());
    parse(text).unwrap().apply(up, &m)
}

fn cidrs(s: &[&str]) -> Vec<Cidr> {
    s.iter().map(|c| c.parse().unwrap()).collect()
}

#[test]
fn every_option_of_up_is_a_key_named_as_the_option() {
    let up = <UpArgs as clap::Args>::augment_args(clap::Command::new("up"));
    let mut options = 0;
    for arg in up.get_arguments().filter(|a| !["profile", "profile_name"].contains(&a.get_id().as_str())) {
        let key = KEYS.iter().find(|k| k.id == arg.get_id()).unwrap_or_else(|| panic!("no key for {}", arg.get_id()));
        assert_eq!(Some(key.name), arg.get_long(), "key {} is not its option's long name", key.name);
        options += 1;
    }
    assert_eq!(options, KEYS.len(), "a key stands for no option of `up`");
    for k in &KEYS {
        assert!(k
            .conflicts
            .iter()
            .chain(k.replaced_by.as_slice())
            .all(|c| key(c).is_some() || KEYS.iter().any(|o| o.id == *c)));
    }
}

#[test]
fn every_key_lands_in_up_args() {
    let text = r#"
ipr = "udp://192.0.2.1:51820"
route = ["192.0.2.0/24", "2001:db8::/32"]
exclude = "192.0.2.128/25"
allow-lan = true
ipv6 = "on"
tun = "smx-work"
mtu = 1400
traffic = "fast"
surbs = 9
identity-dir = "/var/lib/smolmix-vpn/id"
nym-api = ["http://192.0.2.9:8080/", "http://192.0.2.10:8080/"]
dns = ["192.0.2.53"]
dns-check-name = "example.test"
"#;
    let a = merged(text, &[]).unwrap();
    assert_eq!(a.ipr, Some("udp://192.0.2.1:51820".parse::<IprAddr>().unwrap()));
    assert_eq!(a.routes, cidrs(&["192.0.2.0/24", "2001:db8::/32"]));
    assert_eq!(a.excludes, cidrs(&["192.0.2.128/25"]));
    assert!(a.allow_lan);
    assert_eq!(a.ipv6, OnOff::On);
    assert_eq!(a.tun, "smx-work");
    assert_eq!(a.mtu, Some(1400));
    assert_eq!(a.traffic, TrafficProfile::Fast);
    assert_eq!(a.surbs, 9);
    assert_eq!(a.identity_dir, Some(PathBuf::from("/var/lib/smolmix-vpn/id")));
    assert_eq!(a.directory.nym_api, ["http://192.0.2.9:8080/", "http://192.0.2.10:8080/"]);
    assert_eq!(a.dns, ["192.0.2.53".parse::<IpAddr>().unwrap()]);
    assert_eq!(a.dns_check_name, "example.test");
    let b = merged("no-dns = true\nnetns = \"work\"\nipv6 = \"off\"\n", &[]).unwrap();
    assert!(b.no_dns);
    assert_eq!(b.netns.as_deref(), Some("work"));
    assert_eq!(b.ipv6, OnOff::Off);
    // Nothing in the profile: exactly the command line's defaults.
    let empty = merged("# nothing\n", &[]).unwrap();
    assert_eq!(format!("{empty:?}"), format!("{:?}", cli(&["up"]).0));
}

#[test]
fn an_unknown_key_is_named_at_its_line_with_the_known_ones() {
    let m = rejection("tun = \"a\"\n\n# comment\nmtuu = 1400\n");
    assert!(m.starts_with(&format!("{PATH}:4: key \"mtuu\": not an option of `up`; the keys are: ipr, route,")), "{m}");
    // The first unknown key in the file's order, not the alphabet's.
    assert_eq!(where_rejected("zzz = 1\naaa = 2\n"), (1, "zzz".into()));
    // Tables and dotted keys are not options either.
    assert_eq!(where_rejected("mtu = 1400\n[dns]\nservers = []\n"), (2, "dns".into()));
    assert_eq!(where_rejected("mtu = 1400\ndns.server = \"192.0.2.1\"\n"), (2, "dns".into()));
    // The option's clap id is not a key: the key is the long option's name.
    assert_eq!(where_rejected("allow_lan = true\n"), (1, "allow_lan".into()));
}

#[test]
fn a_value_of_the_wrong_type_is_named_at_its_line() {
    for (key, value) in [
        ("ipr", "1"),
        ("route", "1"),
        ("route", "[1]"),
        ("exclude", "[\"192.0.2.0/24\", true]"),
        ("allow-lan", "\"yes\""),
        ("ipv6", "false"),
        ("tun", "1"),
        ("mtu", "\"1400\""),
        ("mtu", "1400.0"),
        ("traffic", "[\"fast\"]"),
        ("surbs", "true"),
        ("identity-dir", "1"),
        ("nym-api", "true"),
        ("dns", "{ a = 1 }"),
        ("no-dns", "1"),
        ("dns-check-name", "[]"),
        ("netns", "1979-05-27"),
    ] {
        let text = format!("# a profile\n\n{key} = {value}\n");
        assert_eq!(where_rejected(&text), (3, key.to_string()), "{text}");
        assert!(rejection(&text).contains("expected "), "{}", rejection(&text));
    }
    assert_eq!(
        rejection("mtu = \"1400\""),
        format!("{PATH}:1: key \"mtu\": expected an integer, found string \"1400\"")
    );
}

#[test]
fn a_bad_value_gets_the_command_lines_verdict() {
    for (key, value, says) in [
        ("mtu", "100", "100 is not in 1280..=65535"),
        ("mtu", "70000", "70000 is not in 1280..=65535"),
        ("mtu", "-1", "-1 is not in 1280..=65535"),
        ("surbs", "0", "0 is not in 1..=100"),
        ("surbs", "101", "101 is not in 1..=100"),
        ("route", "[\"10.0.0.0/33\"]", "is not an IPv4 or IPv6 prefix"),
        ("exclude", "\"nonsense\"", "is not an IPv4 or IPv6 prefix"),
        ("ipv6", "\"maybe\"", "\"maybe\" is not one of: on, off"),
        ("traffic", "\"slow\"", "\"slow\" is not one of: default, fast"),
        ("tun", "\"a/b\"", "an interface name is 1 to 15 characters"),
        ("tun", "\"this-name-is-too-long\"", "an interface name is 1 to 15 characters"),
        ("netns", "\"a/b\"", "is not a valid namespace name"),
        ("ipr", "\"tcp://192.0.2.1:5\"", "expected udp://HOST:PORT or a Nym address"),
        ("dns", "[\"192.0.2.300\"]", "invalid IP address syntax"),
        ("identity-dir", "\"relative/dir\"", "is relative; a profile's paths must be absolute"),
    ] {
        let text = format!("# a profile\n{key} = {value}\n");
        let m = rejection(&text);
        assert!(m.starts_with(&format!("{PATH}:2: key \"{key}\": ")), "{m}");
        assert!(m.contains(says), "{key} = {value}: {m}");
    }
    assert_eq!(rejection("\n\nmtu = 100\n"), format!("{PATH}:3: key \"mtu\": 100 is not in 1280..=65535"));
}

#[test]
fn a_bad_element_of_a_list_is_named_at_its_own_line() {
    let text = "route = [\n  \"10.0.0.0/8\",\n  \"192.0.2.0/24\",\n  \"10.0.0.0/99\",\n]\n";
    assert_eq!(where_rejected(text), (4, "route".into()));
    assert!(rejection(text).contains("\"10.0.0.0/99\""));
    assert_eq!(where_rejected("dns = [\n  1,\n]\n"), (2, "dns".into()));
    // One string is a list of one; so is a one-element array.
    assert_eq!(merged("exclude = \"192.0.2.0/24\"", &[]).unwrap().excludes, cidrs(&["192.0.2.0/24"]));
    assert_eq!(merged("route = [\"192.0.2.0/24\"]", &[]).unwrap().routes, cidrs(&["192.0.2.0/24"]));
}

#[test]
fn keys_the_command_line_cannot_combine_a_profile_cannot_either() {
    let m = rejection("dns = [\"192.0.2.53\"]\nno-dns = true\n");
    assert_eq!(m, format!("{PATH}:1: key \"dns\": cannot be combined with key \"no-dns\" (line 2); drop one of them"));
    assert_eq!(where_rejected("mtu = 1400\nnetns = \"app\"\nroute = \"192.0.2.0/24\"\n"), (2, "netns".into()));
    assert_eq!(where_rejected("exclude = \"192.0.2.0/24\"\nnetns = \"app\"\n"), (1, "exclude".into()));
}

#[test]
fn a_profile_alone_must_pass_validate_and_the_key_at_fault_is_named() {
    for (text, line, key) in [
        ("ipv6 = \"off\"\nroute = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n", 2, "route"),
        ("ipv6 = \"off\"\ndns = \"2001:db8::53\"\n", 2, "dns"),
        ("\nexclude = \"0.0.0.0/0\"\n", 2, "exclude"),
        ("dns = \"192.0.2.53\"\nexclude = \"192.0.2.0/24\"\n", 1, "dns"),
        // The default servers are caught by the exclude: the exclude is at fault.
        ("mtu = 1400\nexclude = \"9.9.9.0/24\"\n", 2, "exclude"),
    ] {
        assert_eq!(where_rejected(text), (line, key.to_string()), "{text}");
    }
    assert!(rejection("ipv6 = \"off\"\nroute = \"2001:db8::/32\"\n")
        .contains("--route 2001:db8::/32 is IPv6 but --ipv6 off"));
}

#[test]
fn not_toml_is_named_at_its_line() {
    for (text, line) in
        [("mtu = 1400\ntun = \n", 2), ("mtu = 1400\n\nmtu = 1500\n", 3), ("\n\nroute = [\"a\" \"b\"]\n", 3)]
    {
        match parse(text) {
            Err(ProfileError::Syntax { line: l, path, message }) => {
                assert_eq!((l, path.as_path()), (line, Path::new(PATH)), "{text:?}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn the_command_line_overrides_scalars_and_replaces_lists() {
    let text = "tun = \"smx-work\"\nmtu = 1400\nroute = [\"192.0.2.0/24\", \"198.51.100.0/24\"]\nipv6 = \"off\"\n";
    let a = merged(text, &["--tun", "other", "--route", "203.0.113.0/24"]).unwrap();
    assert_eq!(a.tun, "other");
    assert_eq!(a.routes, cidrs(&["203.0.113.0/24"]), "a list on the command line replaces the profile's");
    assert_eq!((a.mtu, a.ipv6), (Some(1400), OnOff::Off), "what the command line leaves alone is the profile's");
    // A value equal to the default, typed on the command line, is still the user's choice.
    let b = merged(text, &["--tun", "smx0", "--ipv6", "on", "--mtu", "1500"]).unwrap();
    assert_eq!((b.tun.as_str(), b.ipv6, b.mtu), ("smx0", OnOff::On, Some(1500)));
    // Positive control: without the options, the profile's values.
    let c = merged(text, &[]).unwrap();
    assert_eq!((c.tun.as_str(), c.routes.len()), ("smx-work", 2));
}

#[test]
fn dns_and_no_dns_on_the_command_line_replace_either_key() {
    let a = merged("no-dns = true\n", &["--dns", "192.0.2.53"]).unwrap();
    assert!(!a.no_dns);
    assert_eq!(a.dns.len(), 1);
    let b = merged("dns = [\"192.0.2.53\"]\n", &["--no-dns"]).unwrap();
    assert!(b.no_dns && b.dns.is_empty());
    assert!(b.validate().is_ok());
}

#[test]
fn per_app_and_routes_across_profile_and_command_line_are_refused() {
    let m = merged("mtu = 1400\nnetns = \"app\"\n", &["--route", "192.0.2.0/24"]).unwrap_err().to_string();
    assert_eq!(
        m,
        format!("{PATH}:2: key \"netns\": cannot be combined with --route on the command line; drop one of them")
    );
    let m = merged("exclude = [\"192.0.2.0/24\"]\n", &["--netns", "app"]).unwrap_err().to_string();
    assert!(m.starts_with(&format!("{PATH}:1: key \"exclude\": cannot be combined with --netns")), "{m}");
    // The command line's own netns replaces the profile's.
    assert_eq!(merged("netns = \"app\"\n", &["--netns", "other"]).unwrap().netns.as_deref(), Some("other"));
}

#[test]
fn a_combination_only_the_merge_makes_is_rejected_naming_the_profile() {
    let e = merged("ipv6 = \"off\"\n", &["--route", "2001:db8::/32"]).unwrap_err();
    assert!(matches!(e, ProfileError::Combined { source: ArgError::V6RouteWithV6Off(_), .. }), "{e:?}");
    assert!(e.to_string().ends_with(&format!("(the command line with profile {PATH})")), "{e}");
}

#[test]
fn positional_and_option_name_the_same_profile_and_not_both() {
    assert_eq!(cli(&["up", "work"]).0.profile.name(), Some("work"));
    assert_eq!(cli(&["up", "--profile", "work"]).0.profile.name(), Some("work"));
    assert_eq!(cli(&["up", "--tun", "x"]).0.profile.name(), None);
    let both = Cli::command().try_get_matches_from(["smolmix-vpn", "up", "--profile", "a", "b"]);
    assert_eq!(both.unwrap_err().kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn without_a_profile_the_command_line_is_untouched() {
    let (up, m) = cli(&["up", "--tun", "x"]);
    let dir = Path::new("/nonexistent-smolmix-profiles");
    assert_eq!(resolve(up, &m, dir).unwrap().tun, "x");
}

/// A fresh directory under the system's temp dir (root's sticky /tmp passes the trust check).
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smx-profile-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir(&d).unwrap();
    d
}

#[test]
fn names_and_paths() {
    let dir = Path::new("/etc/smolmix-vpn");
    assert_eq!(locate("work", dir).unwrap(), (dir.join("work.toml"), Some(dir.to_path_buf())));
    assert_eq!(locate("a-b_c.1", dir).unwrap().0, dir.join("a-b_c.1.toml"));
    assert_eq!(locate("./w.toml", dir).unwrap(), (PathBuf::from("./w.toml"), None));
    assert_eq!(locate("/srv/w.toml", dir).unwrap().0, PathBuf::from("/srv/w.toml"));
    for bad in ["", ".hidden", "..", "a b", "a:b", "é", &"x".repeat(251)] {
        assert!(matches!(locate(bad, dir), Err(ProfileError::BadName(_))), "{bad:?}");
    }
    assert!(ProfileError::BadName("a b".into()).to_string().contains("./a b"));
}

#[test]
fn a_missing_profile_is_named_with_the_ones_there_are() {
    let dir = scratch("missing");
    for f in ["b.toml", "a.toml", "notes.txt", ".hidden.toml", "bad name.toml"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let m = load("c", &dir).unwrap_err().to_string();
    let d = dir.display();
    assert_eq!(m, format!("no profile {d}/c.toml: the profiles in {d} are: a, b"));
    // Positive control: one that is there loads.
    assert_eq!(load("a", &dir).unwrap().path(), dir.join("a.toml"));
    let empty = scratch("empty");
    assert!(load("c", &empty).unwrap_err().to_string().ends_with("holds no profiles (NAME.toml)"));
    let gone = dir.join("nope");
    assert!(load("c", &gone).unwrap_err().to_string().contains("does not exist"));
    let m = load(&format!("{d}/elsewhere.toml"), &empty).unwrap_err().to_string();
    assert_eq!(m, format!("no profile {d}/elsewhere.toml: no such file"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn a_file_errors_name_the_path_given() {
    let dir = scratch("errors");
    std::fs::write(dir.join("w.toml"), "tun = \"smx1\"\nmtu = 100\n").unwrap();
    let m = load("w", &dir).unwrap_err().to_string();
    assert_eq!(m, format!("{}/w.toml:2: key \"mtu\": 100 is not in 1280..=65535", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_profile_others_can_write_is_refused_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("trust");
    let file = dir.join("w.toml");
    std::fs::write(&file, "mtu = 1400\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Whoever runs the tests: a file everyone can write is never root's alone.
    let e = trust::check(&file).unwrap_err();
    assert!(matches!(&e, ProfileError::Untrusted { path, .. } if *path == file), "{e:?}");
    if nix::unistd::geteuid().is_root() {
        assert!(load("w", &dir).unwrap_err().to_string().contains("chmod go-w"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load("w", &dir).is_ok(), "root's own 0644 file is fine");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = load("w", &dir).unwrap_err();
        assert!(matches!(&e, ProfileError::Untrusted { path, .. } if *path == dir), "{e:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped example (examples/profiles/example.toml) never rots.
#[test]
fn the_example_parses_names_every_key_and_its_commented_lines_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/profiles/example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    Profile::parse(&path, &text).unwrap();
    let mut seen = Vec::new();
    for line in text.lines() {
        let active = line.split_once(" = ").map(|(k, _)| k);
        let commented = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")).filter(|(k, _)| key(k).is_some());
        if let Some(k) = active.filter(|k| !k.starts_with('#')) {
            seen.push(k.to_string());
        } else if let Some((k, _)) = commented {
            let alone = &line[2..];
            Profile::parse(&path, alone).unwrap_or_else(|e| panic!("{alone:?}: {e}"));
            seen.push(k.to_string());
        }
    }
    for k in &KEYS {
        assert!(seen.iter().any(|s| s == k.name), "the example does not show key {:?}", k.name);
    }
}

#[test]
fn lines_count_from_one() {
    assert_eq!(line_of("a\nb\nc", 0), 1);
    assert_eq!(line_of("a\nb\nc", 2), 2);
    assert_eq!(line_of("a\nb\nc", 4), 3);
    assert_eq!(line_of("a", 99), 1);
}
