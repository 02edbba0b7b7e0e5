//! Which TCP ports something in the sandbox listens on, so the host can offer previews of dev
//! servers.
//!
//! Read from `/proc/net/tcp{,6}` rather than by probing: it is one file read, sees servers bound
//! to any address, and shows exactly the guest's network namespace (the sandbox's own).

use kiln_protocol::guest::{GuestMessage, ListeningPort};
use std::net::{Ipv4Addr, Ipv6Addr};

const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];
/// `TCP_LISTEN` in the kernel's `st` column.
const LISTEN: &str = "0A";

/// The listening sockets, deduplicated and sorted by port then address. A table that cannot be
/// read (no IPv6 in the kernel) contributes nothing.
pub(crate) fn list() -> GuestMessage {
    let mut ports: Vec<ListeningPort> = TABLES
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| parse_table(&text))
        .collect();
    ports.sort_by(|a, b| (a.port, &a.address).cmp(&(b.port, &b.address)));
    ports.dedup();
    GuestMessage::Ports { ports }
}

/// Parses one table; lines that do not look like socket entries are skipped.
fn parse_table(text: &str) -> Vec<ListeningPort> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

/// `  0: 0100007F:1F90 00000000:0000 0A …` → `127.0.0.1:8080` if the state is LISTEN.
fn parse_line(line: &str) -> Option<ListeningPort> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != LISTEN {
        return None;
    }
    let (address, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let address = parse_address(address)?;
    Some(ListeningPort { port, address })
}

/// The kernel prints an address as 32-bit words, each in host byte order, so every word's bytes
/// come out in native order to give the address bytes in network order.
fn parse_address(hex: &str) -> Option<String> {
    if !hex.is_ascii() {
        return None;
    }
    let word = |i: usize| -> Option<[u8; 4]> {
        let text = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(text, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(Ipv4Addr::from(word(0)?).to_string()),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(Ipv6Addr::from(bytes).to_string())
        }
        _ => None,
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:A2B4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6 1 0 100 0 0 10 0
";

    fn port(port: u16, address: &str) -> ListeningPort {
        ListeningPort {
            port,
            address: address.into(),
        }
    }

    #[test]
    fn reads_listening_ipv4_sockets_and_skips_connections() {
        assert_eq!(
            parse_table(TCP),
            vec![port(8080, "127.0.0.1"), port(22, "0.0.0.0")]
        );
    }

    #[test]
    fn reads_ipv6_words_in_host_order() {
        assert_eq!(
            parse_table(TCP6),
            vec![
                port(8080, "::"),
                port(3000, "::1"),
                port(80, "::ffff:127.0.0.1")
            ]
        );
    }

    #[test]
    fn garbage_lines_are_skipped_not_fatal() {
        let text = "header\n0: zz:1F90 0:0 0A\n1: 0100007F:XYZ 0:0 0A\n2: 0100007F\n\n3: é000000:0050 0:0 0A\n";
        assert_eq!(parse_table(text), vec![]);
    }
}
