//! SeaweedFS server addresses → gRPC endpoints.
//!
//! SeaweedFS names a master or filer by its HTTP address and derives the gRPC port from it:
//! `host:port` means gRPC on `port + 10000`, and `host:port.grpcPort` names the gRPC port
//! explicitly (this is how filers register with the master, e.g. `127.0.0.1:8888.18888`).
//! MQ brokers only speak gRPC and register as plain `host:port`, which is already the gRPC
//! address, so broker addresses are used as they are ([`broker_endpoint`]).

/// The offset SeaweedFS adds to an HTTP port to get the gRPC port when none is given.
pub const GRPC_PORT_OFFSET: u32 = 10000;

/// `host:port` or `host:port.grpcPort` → `host:grpcPort` (the gRPC address of a master or
/// filer). IPv6 hosts are written in brackets: `[::1]:9333`.
pub fn grpc_address(server: &str) -> Result<String, String> {
    let server = server.trim();
    let (host, ports) = split_host_ports(server)?;
    let grpc_port = match ports.split_once('.') {
        Some((_http, grpc)) => parse_port(grpc, server)?,
        None => {
            let http = parse_port(ports, server)?;
            let grpc = http + GRPC_PORT_OFFSET;
            if grpc > u32::from(u16::MAX) {
                return Err(format!(
                    "{server}: gRPC port {http}+{GRPC_PORT_OFFSET} is out of range"
                ));
            }
            grpc
        }
    };
    Ok(format!("{host}:{grpc_port}"))
}

/// The URI tonic dials for a master or filer address (see [`grpc_address`]).
pub fn server_endpoint(server: &str) -> Result<String, String> {
    grpc_address(server).map(|a| format!("http://{a}"))
}

/// The URI tonic dials for an MQ broker address as the master and the broker's topic
/// assignments report it (`host:port`, already the gRPC port).
pub fn broker_endpoint(broker: &str) -> Result<String, String> {
    let broker = broker.trim();
    let (host, port) = split_host_ports(broker)?;
    if port.contains('.') {
        // Tolerate the `host:port.grpcPort` form too; the gRPC port is the one that counts.
        return server_endpoint(broker);
    }
    parse_port(port, broker)?;
    Ok(format!("http://{host}:{port}"))
}

fn split_host_ports(server: &str) -> Result<(&str, &str), String> {
    let (host, ports) = if let Some(rest) = server.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| format!("{server}: unclosed '[' in address"))?;
        let ports = rest[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| format!("{server}: expected host:port"))?;
        (&server[..end + 2], ports)
    } else {
        server.rsplit_once(':').ok_or_else(|| format!("{server}: expected host:port"))?
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{server}: empty host"));
    }
    Ok((host, ports))
}

fn parse_port(port: &str, server: &str) -> Result<u32, String> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(u32::from(p)),
        _ => Err(format!("{server}: bad port {port:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_port_gets_the_conventional_grpc_offset() {
        assert_eq!(grpc_address("127.0.0.1:9333").unwrap(), "127.0.0.1:19333");
        assert_eq!(grpc_address("master.svc:8888").unwrap(), "master.svc:18888");
    }

    #[test]
    fn explicit_grpc_port_wins() {
        assert_eq!(grpc_address("127.0.0.1:23888.33888").unwrap(), "127.0.0.1:33888");
        assert_eq!(grpc_address("[::1]:8888.9999").unwrap(), "[::1]:9999");
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        assert_eq!(grpc_address("[::1]:9333").unwrap(), "[::1]:19333");
        assert_eq!(server_endpoint("[fe80::1]:9333").unwrap(), "http://[fe80::1]:19333");
    }

    #[test]
    fn brokers_are_dialed_as_registered() {
        assert_eq!(broker_endpoint("127.0.0.1:17777").unwrap(), "http://127.0.0.1:17777");
        assert_eq!(broker_endpoint("10.0.0.5:17777.27777").unwrap(), "http://10.0.0.5:27777");
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in
            ["", "localhost", ":9333", "host:", "host:abc", "host:0", "[::1", "[]:1", "h:70000"]
        {
            assert!(grpc_address(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(grpc_address("h:60000").is_err(), "60000+10000 overflows a port");
    }
}
