//! The transport's mark: how the tunnel's own packets leave beside the tunnel, and nothing else.
//!
//! The transport's sockets (the UDP socket to a local exit, the mixnet client's websocket to its
//! entry gateway) carry `SO_MARK` = [`FWMARK`], set before they connect (nym-sdk 1.21.6 hands the
//! gateway socket to `with_connection_fd_callback` before `connect`, see transport/mixnet). The
//! host then exempts that mark, not addresses:
//!
//! ```text
//!  pref 5208  fwmark 0x736d  lookup main       the transport's packets: the physical link
//!  pref 5209  from all       lookup 0x736d     everything else: our table (routes.rs)
//!  table inet smolmix_mark
//!   prerouting (mangle):  ct mark 0x736d  meta mark set ct mark   replies carry it too
//!   output (mangle):      meta mark 0x736d  ct mark set meta mark  remember it per connection
//!   guard (raw):          iifname != <tun> daddr <the TUN's addresses>
//!                         fib saddr type != local               drop
//!  sysctl net.ipv4.conf.all.src_valid_mark = 1
//! ```
//!
//! Why a mark and not the gateway's addresses: the addresses come from the directory, i.e. from
//! the gateway's operator, and a rule `to 9.9.9.9 lookup main` published that way would pull
//! every DNS query out of the tunnel; and any program on the host could reach a bypassed
//! address directly. A mark is set only by a process with CAP_NET_ADMIN on its own socket.
//!
//! Why the conntrack lines and the sysctl: the gateway's replies arrive unmarked on the
//! physical link, and strict reverse-path filtering (`rp_filter=1`, RHEL's default) checks their
//! source against the routes: without a mark that is our table, whose route points into the
//! TUN, so the replies would be dropped. Restoring the connection's mark before routing and
//! letting the check use it (`src_valid_mark`) is what wg-quick does for the same reason. The
//! sysctl is journalled with its old value, like every other change.
//!
//! Why the guard: the TUN's addresses are fixed and publicly known (`100.86.0.2`,
//! `fd6d:6978::2`), and Linux answers for a local address on any interface. Someone on the
//! LAN could send to them through the physical link and learn, from the answers, which
//! connections run inside the tunnel (CVE-2019-14899, docs/reliability.md §1.7). Packets for
//! those addresses are only ever legitimate from the TUN or from the host itself; wg-quick
//! drops the rest in the same place. The table exists in full and split mode alike, as the TUN
//! does; per-app mode's TUN lives in a namespace with nothing else in it.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::routes::TABLE;

/// The routing mark of the transport's sockets: our table's id, as wg-quick marks with its
/// table's (0x736d, "sm").
pub const FWMARK: u32 = TABLE;

/// nftables table (family inet) that keeps the mark on the transport's replies.
pub const NFT_TABLE: &str = "smolmix_mark";

/// The one sysctl we change, and only from 0 to 1.
pub const SRC_VALID_MARK: &str = "net.ipv4.conf.all.src_valid_mark";

/// The `nft -f` script that creates [`NFT_TABLE`] for the TUN `tun` with the addresses `v4`
/// and `v6`.
pub fn script(tun: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> String {
    let tun: String = tun.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    format!(
        "table inet {NFT_TABLE} {{\n\
         \tchain restore {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tct mark {FWMARK:#x} meta mark set ct mark\n\t}}\n\
         \tchain save {{\n\t\ttype filter hook output priority mangle; policy accept;\n\
         \t\tmeta mark {FWMARK:#x} ct mark set meta mark\n\t}}\n\
         \tchain guard {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tiifname != \"{tun}\" ip daddr {v4} fib saddr type != local counter drop\n\
         \t\tiifname != \"{tun}\" ip6 daddr {v6} fib saddr type != local counter drop\n\t}}\n\
         }}\n"
    )
}

/// The undo of [`script`].
pub fn undo_args() -> Vec<String> {
    ["delete", "table", "inet", NFT_TABLE].iter().map(|s| s.to_string()).collect()
}

/// `/proc/sys` path of a dotted sysctl key.
pub fn sysctl_path(key: &str) -> std::path::PathBuf {
    std::path::Path::new("/proc/sys").join(key.replace('.', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_restores_and_saves_exactly_our_mark() {
        let s = script("smx0", "100.86.0.2".parse().unwrap(), "fd6d:6978::2".parse().unwrap());
        assert!(s.contains("ct mark 0x736d meta mark set ct mark"), "{s}");
        assert!(s.contains("iifname != \"smx0\" ip daddr 100.86.0.2 fib saddr type != local counter drop"), "{s}");
        assert!(s.contains("iifname != \"smx0\" ip6 daddr fd6d:6978::2 fib saddr type != local counter drop"), "{s}");
        assert!(s.contains("meta mark 0x736d ct mark set meta mark"), "{s}");
        assert!(s.contains("hook prerouting priority mangle") && s.contains("hook output priority mangle"));
        assert_eq!(undo_args().join(" "), "delete table inet smolmix_mark");
        assert_eq!(sysctl_path(SRC_VALID_MARK), std::path::Path::new("/proc/sys/net/ipv4/conf/all/src_valid_mark"));
    }
}
