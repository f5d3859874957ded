//! The throw-away SeaweedFS that every other integration test stands on: it starts, its
//! broker registers with the master, the broker can be stopped and started again on the
//! same port, and dropping the instance stops every process and deletes its dir.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use common::{eventually, seaweedfs};

/// `127.0.0.1:HTTP.GRPC` → the HTTP socket address; `127.0.0.1:GRPC` → itself.
fn http_addr(seaweed_addr: &str) -> SocketAddr {
    let (host, ports) = seaweed_addr.rsplit_once(':').expect("host:port");
    let http = ports.split('.').next().expect("a port");
    format!("{host}:{http}").parse().expect("a socket address")
}

async fn accepts(addr: SocketAddr) -> Result<(), String> {
    TcpStream::connect(addr).await.map(drop).map_err(|e| format!("{addr}: {e}"))
}

async fn refuses(addr: SocketAddr) -> Result<(), String> {
    match TcpStream::connect(addr).await {
        Ok(_) => Err(format!("{addr} still accepts connections")),
        Err(_) => Ok(()),
    }
}

#[tokio::test]
async fn starts_and_restarts_the_broker() {
    let mut fs = seaweedfs().await;
    let broker = http_addr(&fs.addrs().broker);
    accepts(broker).await.expect("the broker accepts TCP once started");
    assert!(
        fs.master_lists_broker().await.expect("the master answers"),
        "the master lists the broker once started\n{}",
        fs.log_tail()
    );

    fs.stop_broker().await.expect("the broker stops");
    eventually(|| refuses(broker)).await;
    eventually(|| async {
        match fs.master_lists_broker().await {
            Ok(false) => Ok(()),
            Ok(true) => Err("the master still lists the stopped broker".to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;

    fs.start_broker(Duration::from_secs(60)).await.expect("the broker starts again");
    accepts(broker).await.expect("the restarted broker accepts TCP on the same port");
    assert!(
        fs.master_lists_broker().await.expect("the master answers"),
        "the master lists the restarted broker"
    );
}

#[tokio::test]
async fn drop_stops_every_process_and_removes_the_dir() {
    let fs = seaweedfs().await;
    let addrs = [
        http_addr(&fs.addrs().master),
        http_addr(&fs.addrs().filer),
        http_addr(&fs.addrs().broker),
    ];
    let dir = fs.dir().to_path_buf();
    for addr in addrs {
        accepts(addr).await.expect("up before the drop");
    }

    drop(fs);

    for addr in addrs {
        refuses(addr).await.expect("nothing listens after the drop");
    }
    assert!(!dir.exists(), "{} is removed", dir.display());
}
