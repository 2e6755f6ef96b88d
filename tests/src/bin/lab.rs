//! `cargo xtask lab`: the two-server lab in throwaway network namespaces.
//!
//! ```text
//!   ns a (server A)            ns sw (a switch)            ns b (server B)
//!   eth1 10.77.0.1 ───── a-port ─┐                 ┌─ b-port ───── eth1 10.77.0.2
//!                                ├── br0 (bridge) ─┤               ▲ wimark-ha stats (XDP)
//!   ns ap (two APs)              │                 │
//!   eth0 10.77.0.101, .102 ── ap-port ─────────────┘
//! ```
//!
//! Server A speaks VRRP the way the vendor's keepalived.conf does (v2, VRID
//! 67, priority 200, auth PASS, 1 s) and finally resigns (priority 0); one
//! advert crosses "a router" (TTL 64) to show an invalid one. The APs talk to
//! server B over real sockets: IKE, NAT-T, ESP and an MQTT session. Server B
//! runs `wimark-ha stats` on its peer interface and prints what it saw.
//! Everything is removed at the end, whatever happens.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use wimark_ha::vrrp::{ChecksumMode, Version};
use wimark_ha_tests::{
    frames::{vendor_v2_advert, AP_1, AP_2, SERVER_A, SERVER_B, VRRP_V4_GROUP},
    lab::{in_netns, Lab},
    require_root,
    sockets::RawIpSocket,
    wimark_ha_bin,
};

const DURATION_S: u64 = 7;

fn main() -> Result<()> {
    require_root("the lab");
    let binary = wimark_ha_bin();
    let mut lab = Lab::new()?;
    let a = lab.namespace("a", false)?;
    let b = lab.namespace("b", false)?;
    let ap = lab.namespace("ap", false)?;
    let sw = lab.namespace("sw", false)?;
    lab.veth((&a, "eth1"), (&sw, "a-port"))?;
    lab.veth((&b, "eth1"), (&sw, "b-port"))?;
    lab.veth((&ap, "eth0"), (&sw, "ap-port"))?;
    lab.bridge(&sw, "br0", &["a-port", "b-port", "ap-port"])?;
    lab.address(&a, "eth1", &format!("{SERVER_A}/24"))?;
    lab.address(&b, "eth1", &format!("{SERVER_B}/24"))?;
    lab.address(&ap, "eth0", &format!("{AP_1}/24"))?;
    lab.address(&ap, "eth0", &format!("{AP_2}/24"))?;
    println!("lab: namespaces {a}, {b}, {ap}, {sw}: server A, server B, two APs, a bridge");

    // Server B: the MQTT broker's port, then the monitor.
    let broker = in_netns(&b, || TcpListener::bind(SocketAddrV4::new(SERVER_B, 1883)))??;
    let broker = thread::spawn(move || serve_mqtt(broker));
    println!(
        "lab: server B runs `wimark-ha stats --iface eth1 --duration {DURATION_S}s --interval 2s`"
    );
    let stats = {
        let binary = binary.clone();
        in_netns(&b, move || {
            Command::new(binary)
                .args([
                    "stats",
                    "--iface",
                    "eth1",
                    "--duration",
                    &format!("{DURATION_S}s"),
                    "--interval",
                    "2s",
                ])
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .spawn()
        })??
    };
    let mut stats = ChildGuard(stats);
    wait_for_xdp(&b)?;

    let vrrp = {
        thread::spawn({
            let a = a.clone();
            move || in_netns(&a, server_a_adverts)
        })
    };
    let aps = thread::spawn({
        let ap = ap.clone();
        move || in_netns(&ap, ap_traffic)
    });
    vrrp.join()
        .map_err(|_| anyhow::anyhow!("server A thread panicked"))???;
    aps.join()
        .map_err(|_| anyhow::anyhow!("AP thread panicked"))???;

    let status = stats.0.wait().context("waiting for wimark-ha stats")?;
    let _ = broker.join();
    if !status.success() {
        bail!("wimark-ha stats failed ({status})");
    }
    drop(lab);
    println!("lab: done; namespaces removed");
    Ok(())
}

/// Kills the child if the lab fails half-way, so nothing outlives it.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_for_xdp(namespace: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attached = in_netns(namespace, || -> Result<bool> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt
                .block_on(wimark_ha::monitor::attached_xdp_program("eth1"))?
                .is_some())
        })??;
        if attached {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("wimark-ha stats did not attach within 10 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Server A: the vendor's VRRPv2 instance, one advert a second, one that
/// crossed a router (TTL 64), then a resignation (priority 0).
fn server_a_adverts() -> Result<()> {
    let advert = vendor_v2_advert();
    assert_eq!(advert.version, Version::V2);
    let send = |advert: &wimark_ha::vrrp::Advert, ttl: u8| -> Result<()> {
        let socket = RawIpSocket::new(112, ttl, SERVER_A)?;
        let message = advert.encode(
            SERVER_A.into(),
            VRRP_V4_GROUP.into(),
            ChecksumMode::WithoutPseudoHeader,
        )?;
        socket.send_to(&message, VRRP_V4_GROUP)
    };
    for second in 0..DURATION_S - 3 {
        send(&advert, 255)?;
        if second == 1 {
            send(&advert, 64)?;
        }
        thread::sleep(Duration::from_secs(1));
    }
    let mut resign = advert.clone();
    resign.priority = 0;
    send(&resign, 255)
}

/// Two APs: IKE, NAT-T, ESP and an MQTT session to server B.
fn ap_traffic() -> Result<()> {
    let ike = UdpSocket::bind(SocketAddrV4::new(AP_1, 500))?;
    let natt_1 = UdpSocket::bind(SocketAddrV4::new(AP_1, 4500))?;
    let natt_2 = UdpSocket::bind(SocketAddrV4::new(AP_2, 4500))?;
    let esp = RawIpSocket::new(libc::IPPROTO_ESP, 64, AP_2)?;
    let mut mqtt = TcpStream::connect_timeout(
        &SocketAddrV4::new(SERVER_B, 1883).into(),
        Duration::from_secs(2),
    )
    .context("MQTT connect to server B")?;
    mqtt.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c")?; // CONNECT
    let mut reply = [0u8; 4];
    mqtt.read_exact(&mut reply)?;
    for round in 0..40u32 {
        if round % 4 == 0 {
            ike.send_to(&[0u8; 200], SocketAddrV4::new(SERVER_B, 500))?;
        }
        let mut esp_in_udp = vec![0, 0, 0x10, 0x01];
        esp_in_udp.extend_from_slice(&round.to_be_bytes());
        esp_in_udp.resize(120, 0xab);
        natt_1.send_to(&esp_in_udp, SocketAddrV4::new(SERVER_B, 4500))?;
        natt_2.send_to(&esp_in_udp, SocketAddrV4::new(SERVER_B, 4500))?;
        let mut packet = vec![0, 0, 0x20, 0x02];
        packet.extend_from_slice(&round.to_be_bytes());
        packet.resize(96, 0xcd);
        esp.send_to(&packet, SERVER_B)?;
        if round % 8 == 0 {
            mqtt.write_all(b"\xc0\x00")?; // PINGREQ
            mqtt.read_exact(&mut reply[..2])?;
        }
        thread::sleep(Duration::from_millis(100));
    }
    mqtt.write_all(b"\xe0\x00")?; // DISCONNECT
    Ok(())
}

/// Just enough of an MQTT broker for the lab: CONNACK, PINGRESP, close on
/// DISCONNECT.
fn serve_mqtt(listener: TcpListener) -> Result<()> {
    let (mut stream, _) = listener.accept()?;
    let mut buffer = [0u8; 64];
    let n = stream.read(&mut buffer)?;
    if n > 0 && buffer[0] == 0x10 {
        stream.write_all(b"\x20\x02\x00\x00")?;
    }
    loop {
        let n = stream.read(&mut buffer[..2])?;
        match (n, buffer[0]) {
            (0, _) | (_, 0xe0) => return Ok(()),
            (_, 0xc0) => stream.write_all(b"\xd0\x00")?,
            _ => {}
        }
    }
}
