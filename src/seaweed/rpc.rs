//! gRPC plumbing shared by the catalog, reader, publisher and filer code.
//!
//! Owns: one lazily connected channel per server, discovery of filers and brokers through the
//! master, per-call deadlines, and the conversion of `tonic::Status` into kelp's [`Error`]
//! (the one place a gRPC status code becomes an [`UpstreamCode`]).
//!
//! Does not own: anything about topics, records or filer entries.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::address;
use super::pb::filer_pb::seaweed_filer_client::SeaweedFilerClient;
use super::pb::master_pb::ListClusterNodesRequest;
use super::pb::master_pb::seaweed_client::SeaweedClient as MasterClient;
use super::pb::messaging_pb::seaweed_messaging_client::SeaweedMessagingClient;
use super::tls::Connector;
use crate::error::{Error, UpstreamCode};

/// Largest gRPC message kelp sends or accepts. Fetch responses carry up to the client's
/// `max_bytes` of records; SeaweedFS itself allows 1 GiB.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// HTTP/2 keep-alive, so a broker that vanished is noticed on idle publish streams too.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

pub(crate) type BrokerClient = SeaweedMessagingClient<Channel>;
pub(crate) type FilerClient = SeaweedFilerClient<Channel>;

/// Why a call failed before kelp looked at the answer.
pub(crate) enum Failure {
    Status(Status),
    Elapsed(Duration),
}

/// The part of a gRPC status code kelp decides on.
fn upstream_code(code: Code) -> UpstreamCode {
    match code {
        Code::Unavailable => UpstreamCode::Unavailable,
        Code::NotFound => UpstreamCode::NotFound,
        Code::InvalidArgument => UpstreamCode::InvalidArgument,
        Code::FailedPrecondition => UpstreamCode::FailedPrecondition,
        other => UpstreamCode::Other(other.description()),
    }
}

impl Failure {
    /// Whether the failure says the server could not be reached (so the channel or the
    /// chosen server should be forgotten and discovered again).
    pub(crate) fn is_transport(&self) -> bool {
        match self {
            Failure::Status(s) => s.code() == Code::Unavailable,
            Failure::Elapsed(_) => true,
        }
    }

    pub(crate) fn into_broker(self, op: &'static str) -> Error {
        match self {
            Failure::Status(s) => Error::Broker {
                op,
                code: upstream_code(s.code()),
                message: s.message().to_string(),
            },
            Failure::Elapsed(after) => Error::Timeout { op, after },
        }
    }

    pub(crate) fn into_filer(self, op: &'static str, path: &str) -> Error {
        match self {
            Failure::Status(s) => Error::Filer {
                op,
                path: path.to_string(),
                code: upstream_code(s.code()),
                message: s.message().to_string(),
            },
            Failure::Elapsed(after) => Error::Timeout { op, after },
        }
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Status(s)
    }
}

/// A request carrying a deadline the server sees (`grpc-timeout`).
pub(crate) fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(timeout);
    req
}

/// Run one unary call with `after` as its deadline on this side as well: the server's
/// deadline does not help when the server never answers.
pub(crate) async fn call<T>(
    after: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Failure> {
    let started = std::time::Instant::now();
    let r = match tokio::time::timeout(after, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(Failure::Status(status)),
        Err(_) => Err(Failure::Elapsed(after)),
    };
    let (service, method) = call_labels::<T>();
    crate::metrics::global().observe_upstream(service, method, started.elapsed(), r.is_ok());
    r
}

/// Metric labels of a call, from its response type: the service from the proto package and
/// the method from the message name (`FetchMessageResponse` → `FetchMessage`). Both come
/// from the fixed set of generated types, so the label set is closed.
fn call_labels<T>() -> (&'static str, &'static str) {
    let full = std::any::type_name::<T>();
    let name = full.rsplit("::").next().unwrap_or(full);
    let method = name.strip_suffix("Response").unwrap_or(name);
    let service = if full.contains("messaging_pb") {
        "broker"
    } else if full.contains("filer_pb") {
        "filer"
    } else if full.contains("master_pb") {
        "master"
    } else {
        "other"
    };
    (service, method)
}

/// The channels kelp holds to SeaweedFS servers.
pub(crate) struct Clients {
    pub(crate) call_timeout: Duration,
    master_addr: String,
    master: Channel,
    /// The configured filer; `None` means "ask the master".
    configured_filer: Option<(String, Channel)>,
    discovered_filer: Mutex<Option<(String, Channel)>>,
    /// Broker gRPC address → channel.
    brokers: Mutex<HashMap<String, Channel>>,
    /// The broker used for control-plane calls (any broker answers them).
    control: Mutex<Option<String>>,
    /// TLS for every channel; `None` for plaintext.
    tls: Option<Connector>,
}

impl Clients {
    pub(crate) fn new(
        master: &str,
        filer: Option<&str>,
        call_timeout: Duration,
        tls: Option<Connector>,
    ) -> Result<Clients, String> {
        let master_channel =
            lazy_channel(&address::server_endpoint(master)?, call_timeout, tls.as_ref())?;
        let configured_filer = match filer {
            Some(f) => Some((
                f.to_string(),
                lazy_channel(&address::server_endpoint(f)?, call_timeout, tls.as_ref())?,
            )),
            None => None,
        };
        Ok(Clients {
            call_timeout,
            master_addr: master.to_string(),
            master: master_channel,
            configured_filer,
            discovered_filer: Mutex::new(None),
            brokers: Mutex::new(HashMap::new()),
            control: Mutex::new(None),
            tls,
        })
    }

    /// Addresses of the registered servers of one kind ("filer" or "broker"), sorted.
    async fn cluster_nodes(&self, kind: &'static str) -> Result<Vec<String>, Error> {
        let op = "master.list_cluster_nodes";
        let mut client = MasterClient::new(self.master.clone());
        let req = request(
            ListClusterNodesRequest {
                client_type: kind.to_string(),
                filer_group: String::new(),
                limit: 0,
            },
            self.call_timeout,
        );
        let resp =
            call(self.call_timeout, client.list_cluster_nodes(req)).await.map_err(|f| match f {
                Failure::Status(s) => Error::Broker {
                    op,
                    code: upstream_code(s.code()),
                    message: format!("master {}: {}", self.master_addr, s.message()),
                },
                Failure::Elapsed(after) => Error::Timeout { op, after },
            })?;
        let mut nodes: Vec<String> = resp.cluster_nodes.into_iter().map(|n| n.address).collect();
        nodes.sort();
        Ok(nodes)
    }

    /// A client for the filer, discovering one through the master when none is configured.
    pub(crate) async fn filer(&self) -> Result<(String, FilerClient), Error> {
        let (addr, channel) = match &self.configured_filer {
            Some(f) => f.clone(),
            None => {
                let known = self.discovered_filer.lock().clone();
                match known {
                    Some(f) => f,
                    None => {
                        let nodes = self.cluster_nodes("filer").await?;
                        let addr = nodes.into_iter().next().ok_or(Error::Filer {
                            op: "discover",
                            path: String::new(),
                            code: UpstreamCode::Unavailable,
                            message: format!("master {} knows no filer", self.master_addr),
                        })?;
                        let uri = address::server_endpoint(&addr).map_err(|why| Error::Filer {
                            op: "discover",
                            path: String::new(),
                            code: UpstreamCode::Unavailable,
                            message: why,
                        })?;
                        let channel = lazy_channel(&uri, self.call_timeout, self.tls.as_ref())
                            .map_err(|why| Error::Filer {
                                op: "discover",
                                path: String::new(),
                                code: UpstreamCode::Unavailable,
                                message: why,
                            })?;
                        tracing::debug!(filer = %addr, "discovered filer through the master");
                        *self.discovered_filer.lock() = Some((addr.clone(), channel.clone()));
                        (addr, channel)
                    }
                }
            }
        };
        let client = SeaweedFilerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok((addr, client))
    }

    /// Forget a discovered filer after a transport failure, so the next call asks the master.
    pub(crate) fn forget_filer(&self) {
        *self.discovered_filer.lock() = None;
    }

    /// A client for the broker at `addr` (as the master or a topic assignment names it).
    pub(crate) fn broker(&self, addr: &str) -> Result<BrokerClient, Error> {
        let mut brokers = self.brokers.lock();
        let channel = match brokers.get(addr) {
            Some(c) => c.clone(),
            None => {
                let uri = address::broker_endpoint(addr).map_err(|why| Error::Broker {
                    op: "connect",
                    code: UpstreamCode::InvalidArgument,
                    message: why,
                })?;
                let c =
                    lazy_channel(&uri, self.call_timeout, self.tls.as_ref()).map_err(|why| {
                        Error::Broker {
                            op: "connect",
                            code: UpstreamCode::InvalidArgument,
                            message: why,
                        }
                    })?;
                brokers.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(SeaweedMessagingClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Drop the channel to a broker that failed at the transport level; a broker that comes
    /// back at the same address gets a fresh connection on next use.
    pub(crate) fn forget_broker(&self, addr: &str) {
        self.brokers.lock().remove(addr);
        let mut control = self.control.lock();
        if control.as_deref() == Some(addr) {
            *control = None;
        }
    }

    /// The broker for control-plane calls: the one used last, else the first the master
    /// lists. Non-balancer brokers forward control calls to the balancer themselves.
    pub(crate) async fn control_broker(&self) -> Result<(String, BrokerClient), Error> {
        let known = self.control.lock().clone();
        let addr = match known {
            Some(a) => a,
            None => {
                let nodes = self.cluster_nodes("broker").await?;
                let addr = nodes.into_iter().next().ok_or(Error::NoBroker { op: "discover" })?;
                tracing::debug!(broker = %addr, "using broker for control calls");
                *self.control.lock() = Some(addr.clone());
                addr
            }
        };
        let client = self.broker(&addr)?;
        Ok((addr, client))
    }
}

/// A channel that connects on first use. `uri` is `http://host:port` (the `address`
/// forms); with `tls` the same server is dialled as `https://` through the TLS connector,
/// and the connect timeout bounds the TCP connect and the handshake together.
fn lazy_channel(
    uri: &str,
    connect_timeout: Duration,
    tls: Option<&Connector>,
) -> Result<Channel, String> {
    let uri = match tls {
        Some(_) => uri.replacen("http://", "https://", 1),
        None => uri.to_string(),
    };
    let endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| format!("{uri}: {e}"))?;
    let endpoint = endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(connect_timeout)
        .keep_alive_while_idle(true);
    Ok(match tls {
        Some(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
        None => endpoint.connect_lazy(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_upstream_codes() {
        assert_eq!(upstream_code(Code::Unavailable), UpstreamCode::Unavailable);
        assert_eq!(upstream_code(Code::NotFound), UpstreamCode::NotFound);
        assert_eq!(upstream_code(Code::InvalidArgument), UpstreamCode::InvalidArgument);
        assert_eq!(upstream_code(Code::FailedPrecondition), UpstreamCode::FailedPrecondition);
        let other = upstream_code(Code::Internal);
        assert_eq!(other, UpstreamCode::Other(Code::Internal.description()));
        assert_eq!(other.to_string(), Code::Internal.description());
    }

    #[test]
    fn labels_come_from_the_response_type() {
        use crate::seaweed::pb::messaging_pb::FetchMessageResponse;
        assert_eq!(super::call_labels::<FetchMessageResponse>(), ("broker", "FetchMessage"));
    }
}
