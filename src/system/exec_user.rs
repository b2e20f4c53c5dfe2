//! Who `exec` runs a program as; exec.rs runs it.
//!
//! [`choose_user`]: `--user` if given (the only way to get root); else the sudo
//! (or pkexec) caller; else the real uid if it is not root; else we refuse. Users of
//! namespaced-openvpn and vopono run apps as themselves (docs/peers.md §6–§7); a browser started as
//! root by accident writes root-owned files into a home directory and has no sandbox at all.
//! Run through sudo or pkexec by another user ([`delegated_caller`]), `exec` is that user's
//! tool, granted by a sudoers or polkit rule, and runs programs only as that user
//! ([`only_the_caller`]): a rule allowing `smolmix-vpn exec` must not mean "any command as root".

use nix::unistd::{Gid, Uid, User};

use super::exec::ExecError;

/// Who to become, before looking it up in the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChoice {
    /// A user name.
    Name(String),
    /// A numeric user.
    Id {
        /// The user id.
        uid: u32,
        /// The group id, when the caller's is known (`SUDO_GID`); else the user's primary group.
        gid: Option<u32>,
    },
}

/// The user who had root run us, when that is someone else than root: sudo's `SUDO_UID` (and
/// `SUDO_GID`), else pkexec's `PKEXEC_UID`. Both programs set these themselves, over anything
/// the caller passed. A malformed value is an error, never "no caller": that would fall back
/// to root's freedom.
pub fn delegated_caller(env: impl Fn(&str) -> Option<String>) -> Result<Option<(u32, Option<u32>)>, ExecError> {
    let id = |var: &'static str| -> Result<Option<u32>, ExecError> {
        env(var).map(|v| v.trim().parse::<u32>().map_err(|_| ExecError::BadEnv { var, value: v })).transpose()
    };
    let caller = match id("SUDO_UID")? {
        Some(uid) => Some((uid, id("SUDO_GID")?)),
        None => id("PKEXEC_UID")?.map(|uid| (uid, None)),
    };
    // `sudo` run from a root shell: root delegated to root, nobody to restrict.
    Ok(caller.filter(|&(uid, _)| uid != 0))
}

/// Picks the user CMD runs as; see the module doc for the order and why root needs `--user`.
pub fn choose_user(
    explicit: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    real_uid: u32,
) -> Result<UserChoice, ExecError> {
    let caller = delegated_caller(env)?;
    if let Some(u) = explicit {
        let id = |uid| UserChoice::Id { uid, gid: None };
        return Ok(u.parse().map_or_else(|_| UserChoice::Name(u.to_string()), id));
    }
    match caller {
        Some((uid, gid)) => Ok(UserChoice::Id { uid, gid }),
        None if real_uid != 0 => Ok(UserChoice::Id { uid: real_uid, gid: None }),
        None => Err(ExecError::RootRefused),
    }
}

/// Under sudo or pkexec, the user found for `--user asked` must be the caller itself (by uid:
/// two names of one uid are one user to the kernel).
pub fn only_the_caller(caller: Option<u32>, asked: Option<&str>, uid: u32) -> Result<(), ExecError> {
    match (caller, asked) {
        (Some(caller), Some(asked)) if uid != caller => {
            Err(ExecError::NotTheCaller { caller, asked: asked.to_string(), uid })
        }
        _ => Ok(()),
    }
}

/// The user CMD runs as, and its group, from the user database: [`choose_user`], then
/// [`only_the_caller`] with the environment's caller.
pub fn target_user(explicit: Option<&str>) -> Result<(User, Gid), ExecError> {
    let env = |v: &str| std::env::var(v).ok();
    let choice = choose_user(explicit, env, Uid::current().as_raw())?;
    let (user, gid) = lookup(&choice)?;
    only_the_caller(delegated_caller(env)?.map(|(uid, _)| uid), explicit, user.uid.as_raw())?;
    Ok((user, gid))
}

fn lookup(choice: &UserChoice) -> Result<(User, Gid), ExecError> {
    let io = |e: nix::Error| ExecError::Io { what: "read the user database", source: e.into() };
    let (found, gid) = match choice {
        UserChoice::Name(n) => (User::from_name(n).map_err(io)?, None),
        UserChoice::Id { uid, gid } => (User::from_uid(Uid::from_raw(*uid)).map_err(io)?, *gid),
    };
    let user = found.ok_or_else(|| match choice {
        UserChoice::Name(n) => ExecError::UnknownUser(n.clone()),
        UserChoice::Id { uid, .. } => ExecError::UnknownUser(format!("uid {uid}")),
    })?;
    let gid = gid.map(Gid::from_raw).unwrap_or(user.gid);
    Ok((user, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pick(explicit: Option<&str>, pairs: &[(&str, &str)], real_uid: u32) -> Result<UserChoice, ExecError> {
        let m: HashMap<&str, &str> = pairs.iter().copied().collect();
        choose_user(explicit, |k| m.get(k).map(|v| v.to_string()), real_uid)
    }
    const fn id(uid: u32, gid: Option<u32>) -> UserChoice {
        UserChoice::Id { uid, gid }
    }

    #[test]
    fn user_explicit_wins_else_the_sudo_caller() {
        let sudo = [("SUDO_UID", "1000"), ("SUDO_GID", "100"), ("PKEXEC_UID", "2000")];
        assert_eq!(pick(Some("alice"), &sudo, 0).unwrap(), UserChoice::Name("alice".into()));
        assert_eq!(pick(Some("root"), &[], 0).unwrap(), UserChoice::Name("root".into()));
        assert_eq!(pick(Some("0"), &[], 0).unwrap(), id(0, None));
        assert_eq!(pick(None, &sudo, 0).unwrap(), id(1000, Some(100)));
        assert_eq!(pick(None, &[("PKEXEC_UID", "2000")], 0).unwrap(), id(2000, None));
        // Not root and not under sudo (e.g. file capabilities): the real user.
        assert_eq!(pick(None, &[], 1001).unwrap(), id(1001, None));
    }

    #[test]
    fn under_sudo_only_the_caller() {
        let env =
            |pairs: &'static [(&str, &str)]| move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string());
        assert_eq!(
            delegated_caller(env(&[("SUDO_UID", "1000"), ("SUDO_GID", "100")])).unwrap(),
            Some((1000, Some(100)))
        );
        assert_eq!(delegated_caller(env(&[("PKEXEC_UID", "2000")])).unwrap(), Some((2000, None)));
        assert_eq!(delegated_caller(env(&[("SUDO_UID", "0"), ("SUDO_GID", "0")])).unwrap(), None, "root's own sudo");
        assert_eq!(delegated_caller(env(&[])).unwrap(), None);
        assert!(matches!(delegated_caller(env(&[("SUDO_UID", "1000 ; 0")])), Err(ExecError::BadEnv { .. })));
        // --user naming anyone else, root above all, is refused; the caller by name or uid is not.
        for (asked, uid) in [("root", 0), ("0", 0), ("alice", 1001)] {
            let refused = only_the_caller(Some(1000), Some(asked), uid);
            assert!(
                matches!(refused, Err(ExecError::NotTheCaller { caller: 1000, uid: u, .. }) if u == uid),
                "{asked}"
            );
        }
        assert!(only_the_caller(Some(1000), Some("bob"), 1000).is_ok());
        assert!(only_the_caller(Some(1000), Some("1000"), 1000).is_ok());
        assert!(only_the_caller(Some(1000), None, 1000).is_ok());
        // Root not under sudo keeps --user as it was.
        assert!(only_the_caller(None, Some("root"), 0).is_ok());
    }

    #[test]
    fn user_root_is_never_a_silent_default() {
        assert!(matches!(pick(None, &[], 0), Err(ExecError::RootRefused)));
        // `sudo` run from a root shell: the caller is root too.
        assert!(matches!(pick(None, &[("SUDO_UID", "0")], 0), Err(ExecError::RootRefused)));
        // A malformed variable is an error, not a fall back to root.
        assert!(matches!(pick(None, &[("SUDO_UID", "x")], 0), Err(ExecError::BadEnv { .. })));
        assert!(matches!(pick(None, &[("SUDO_UID", "5"), ("SUDO_GID", "")], 0), Err(ExecError::BadEnv { .. })));
    }
}
