//! Ports and addresses: the seven loopback ports one instance uses, how they are picked, and
//! the address forms SeaweedFS tools expect for them ([`EmbeddedAddrs`]).
//!
//! Owns the loopback host and the `ip:http.grpc` convention. Does not own which flag each
//! port is passed with (`args`), nor the fixed-path gRPC sockets `weed` names after its
//! ports (removed when the instance stops, in the parent module).

use std::io;
use std::net::TcpListener;

/// Loopback address every process binds to and advertises.
pub(super) const HOST: &str = "127.0.0.1";

/// Where a running instance can be reached, in the address forms SeaweedFS tools expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedAddrs {
    /// `127.0.0.1:HTTP.GRPC` (SeaweedFS's form for a server whose gRPC port is not HTTP+10000).
    pub master: String,
    /// `127.0.0.1:HTTP.GRPC`, same convention.
    pub filer: String,
    /// `127.0.0.1:GRPC`: the broker only speaks gRPC.
    pub broker: String,
}

/// Every port the instance uses, all chosen up front so none is left to `weed`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ports {
    pub(super) master_http: u16,
    pub(super) master_grpc: u16,
    pub(super) volume_http: u16,
    pub(super) volume_grpc: u16,
    pub(super) filer_http: u16,
    pub(super) filer_grpc: u16,
    pub(super) broker_grpc: u16,
}

impl Ports {
    /// How many ports [`Ports`] holds: master, volume server and filer have two each (HTTP and
    /// gRPC), the broker one (gRPC).
    const COUNT: usize = 7;

    /// Picks [`Ports::COUNT`] distinct free loopback ports.
    pub(super) fn pick() -> io::Result<Ports> {
        let p = pick_free_ports(Self::COUNT)?;
        Ok(Ports {
            master_http: p[0],
            master_grpc: p[1],
            volume_http: p[2],
            volume_grpc: p[3],
            filer_http: p[4],
            filer_grpc: p[5],
            broker_grpc: p[6],
        })
    }

    pub(super) fn addrs(&self) -> EmbeddedAddrs {
        EmbeddedAddrs {
            master: format!("{HOST}:{}.{}", self.master_http, self.master_grpc),
            filer: format!("{HOST}:{}.{}", self.filer_http, self.filer_grpc),
            broker: format!("{HOST}:{}", self.broker_grpc),
        }
    }

    /// Fixed, distinct ports for tests that only look at strings.
    #[cfg(test)]
    pub(super) fn example() -> Ports {
        Ports {
            master_http: 1001,
            master_grpc: 1002,
            volume_http: 1003,
            volume_grpc: 1004,
            filer_http: 1005,
            filer_grpc: 1006,
            broker_grpc: 1007,
        }
    }
}

/// Asks the kernel for `n` free loopback ports. All `n` listeners are held at once so the
/// ports are distinct, then released for `weed` to bind. Another process could take one in
/// between; with kernel-chosen ephemeral ports that is rare, and it shows up as a child that
/// exits early with "address already in use" in its log.
fn pick_free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind((HOST, 0))).collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn picked_ports_are_distinct_and_nonzero() {
        let ports = pick_free_ports(7).unwrap();
        assert_eq!(ports.len(), 7);
        assert!(ports.iter().all(|&p| p != 0));
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 7);
        // Released: each can be bound again.
        for p in ports {
            TcpListener::bind((HOST, p)).unwrap();
        }
    }

    #[test]
    fn addrs_use_the_http_dot_grpc_convention() {
        assert_eq!(
            Ports::example().addrs(),
            EmbeddedAddrs {
                master: "127.0.0.1:1001.1002".into(),
                filer: "127.0.0.1:1005.1006".into(),
                broker: "127.0.0.1:1007".into(),
            }
        );
    }
}
