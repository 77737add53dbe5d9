//! This host's addresses, kept in the observer's LOCAL_ADDRS map: a PTB
//! addressed to one of them is `received`, and one addressed elsewhere is
//! `transit` or `not-for-us` (see pmtu-ebpf observe::classify).
//!
//! The set follows rtnetlink address events (RTMGRP_IPV4_IFADDR,
//! RTMGRP_IPV6_IFADDR): on any event, or a lost one, the whole set is
//! listed again and the map brought level, so it never drifts.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap, MapData, MapError};
use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle,
    constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR},
    packet_core::NetlinkPayload,
    packet_route::{RouteNetlinkMessage, address::AddressAttribute},
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::task::JoinHandle;

/// The map as userspace holds it.
pub type LocalMap = HashMap<MapData, [u8; 16], u8>;

/// A dump that gets no answer in this long is an error, not a hang.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// An address as the kernel program keys it (IPv4 in the first four bytes).
pub fn key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&a.octets());
            k
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Every address configured in this network namespace.
async fn dump(handle: &Handle) -> anyhow::Result<BTreeSet<IpAddr>> {
    let collect = async {
        let mut msgs = handle.address().get().execute();
        let mut out = BTreeSet::new();
        while let Some(msg) = msgs.try_next().await.context("listing addresses (RTM_GETADDR)")? {
            // IFA_LOCAL is the local end where it differs from IFA_ADDRESS
            // (a point-to-point peer); take every one of both: a PTB to
            // either reaches this host's stack.
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Address(a) | AddressAttribute::Local(a) => {
                        out.insert(*a);
                    }
                    _ => {}
                }
            }
        }
        anyhow::Ok(out)
    };
    tokio::time::timeout(DUMP_TIMEOUT, collect)
        .await
        .map_err(|_| anyhow!("listing addresses (RTM_GETADDR): no answer in {DUMP_TIMEOUT:?}"))?
}

/// Makes `map` hold exactly `want`; `have` is what it holds now.
fn level(map: &mut LocalMap, have: &mut BTreeSet<IpAddr>, want: BTreeSet<IpAddr>) -> anyhow::Result<()> {
    for gone in have.difference(&want) {
        match map.remove(&key(*gone)) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(anyhow!(e).context(format!("forgetting local address {gone}"))),
        }
    }
    for new in want.difference(have) {
        map.insert(key(*new), 1, 0).with_context(|| format!("recording local address {new}"))?;
    }
    *have = want;
    Ok(())
}

/// Fills `map` with this namespace's addresses now, then keeps it level in
/// a task. Needs a tokio runtime; errors in the task are reported on stderr
/// (the observer then classifies with what it has).
pub async fn start(mut map: LocalMap) -> anyhow::Result<JoinHandle<()>> {
    let (mut connection, handle, messages) = rtnetlink::new_connection().context("opening a netlink route socket")?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        .context("subscribing to address events")?;
    let connection = tokio::spawn(connection);
    let mut have = BTreeSet::new();
    level(&mut map, &mut have, dump(&handle).await?)?;
    let mut messages = messages.boxed();
    Ok(tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let relevant = matches!(
                msg.payload,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_))
                    | NetlinkPayload::Overrun(_)
            );
            if !relevant {
                continue;
            }
            let synced = match dump(&handle).await {
                Ok(want) => level(&mut map, &mut have, want),
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                eprintln!("pmtu: keeping the local address list: {e:#}");
            }
        }
        connection.abort();
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_put_ipv4_first() {
        let k = key("192.168.5.1".parse().unwrap());
        assert_eq!(&k[..4], &[192, 168, 5, 1]);
        assert!(k[4..].iter().all(|b| *b == 0));
        assert_eq!(key("fd00::1".parse().unwrap())[15], 1);
    }
}
