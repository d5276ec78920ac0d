//! A fault-injecting TCP proxy in front of a server's RPC port. Servers
//! dial each other from distinct loopback IPs (127.0.0.11, .12, ...), so
//! the proxy knows who is calling and can cut some callers off: a network
//! partition between chosen servers while every process stays alive.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    blocked: HashSet<IpAddr>,
    /// Open connections with their callers, to cut when a caller is blocked.
    open: Vec<(IpAddr, TcpStream)>,
}

/// Listens on a free 127.0.0.1 port and forwards to `target`. Stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let (client, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                if st.lock().unwrap().blocked.contains(&peer.ip()) {
                    // Cut off: the connection is dropped unanswered.
                    continue;
                }
                let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                    continue;
                };
                let _ = upstream.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                if let Ok(c3) = client.try_clone() {
                    st.lock().unwrap().open.push((peer.ip(), c3));
                }
                std::thread::spawn(move || pump(client, upstream));
                std::thread::spawn(move || pump(u2, c2));
            }
        });
        Proxy { addr, state, stop }
    }

    /// Refuses calls from `ips` and cuts the open ones.
    pub fn block(&self, ips: &[IpAddr]) {
        let mut st = self.state.lock().unwrap();
        st.blocked.extend(ips.iter().copied());
        st.open.retain(|(ip, s)| {
            let cut = ips.contains(ip);
            if cut {
                let _ = s.shutdown(Shutdown::Both);
            }
            !cut
        });
    }

    /// Lets every caller through again.
    pub fn heal(&self) {
        self.state.lock().unwrap().blocked.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, s) in self.state.lock().unwrap().open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
