//! Real servers for scan, health and end-to-end tests, each on a free loopback port with its
//! own config, stopped on drop: an rsync daemon, nginx with autoindex (and TLS with a test
//! CA), vsftpd; and small hostile servers written here (one that accepts and never answers,
//! one that answers garbage, one that never stops).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{find, free_port, wait_for_port};

/// A temporary directory readable by the servers' unprivileged workers.
pub fn world_readable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes `files` (path, content) under `root`, setting each mtime.
pub fn write_tree(root: &Path, files: &[(&str, &[u8], i64)]) {
    for (path, content, mtime) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let t = std::time::UNIX_EPOCH + Duration::from_secs(*mtime as u64);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Server {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rsync --daemon` serving `modules` (name, path) read-only.
pub fn rsync_daemon(modules: &[(&str, &Path)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut conf = format!(
        "pid file = {d}/rsyncd.pid\nlock file = {d}/rsyncd.lock\nlog file = {d}/rsyncd.log\nuse chroot = no\nuid = root\ngid = root\n",
        d = dir.path().display()
    );
    for (name, path) in modules {
        conf.push_str(&format!(
            "[{name}]\npath = {}\nread only = yes\nlist = yes\n",
            path.display()
        ));
    }
    let conf_path = dir.path().join("rsyncd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(find("rsync"))
        .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--config={}", conf_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, "rsync daemon");
    Server { port, child, dir }
}

/// nginx serving `root` with autoindex (exact sizes).
pub fn nginx(root: &Path) -> Server {
    nginx_on(root, free_port())
}

/// [`nginx`] on a given port (to bring a "mirror" back where it was).
pub fn nginx_on(root: &Path, port: u16) -> Server {
    nginx_with(root, port, None)
}

/// [`nginx`] over HTTPS with `tls`'s certificate.
pub fn nginx_tls(root: &Path, tls: &Tls) -> Server {
    nginx_with(root, free_port(), Some(tls))
}

/// A certificate authority of its own and a certificate for `127.0.0.1` that it signed, made
/// with the openssl command (EC P-256, X.509 v3, valid for two days).
#[derive(Debug)]
pub struct Tls {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: tempfile::TempDir,
}

/// EC P-256 key options of `openssl req`, unencrypted.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Runs `openssl args` in `dir`, panicking with its stderr when it fails.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(find("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn tls_for_loopback(ca_name: &str) -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    let subject = format!("/CN={ca_name}");
    openssl(
        dir.path(),
        &[
            &["req", "-x509"][..],
            &EC_KEY,
            &[
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subject,
            ],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    let tls = Tls {
        ca: p("ca.pem"),
        ca_key: p("ca.key"),
        cert: p("server.pem"),
        key: p("server.key"),
        dir,
    };
    tls.sign(
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    tls
}

impl Tls {
    /// A client certificate for `subject` (openssl's form: `/CN=admin/O=system:masters`)
    /// signed by this CA, with `extendedKeyUsage=clientAuth`: returns the paths of
    /// `name.pem` and `name.key`, written next to the CA.
    pub fn client_cert(&self, name: &str, subject: &str) -> (PathBuf, PathBuf) {
        self.sign(
            name,
            subject,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
    }

    /// Makes a key and a certificate for `subject` with the extensions `ext` (an openssl
    /// extension file's lines), signed by this CA.
    fn sign(&self, name: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        let (key, csr, pem, cnf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &EC_KEY,
                &["-keyout", &key, "-out", &csr, "-subj", subject],
            ]
            .concat(),
        );
        std::fs::write(dir.join(&cnf), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &cnf,
            ],
        );
        (dir.join(pem), dir.join(key))
    }
}

fn nginx_with(root: &Path, port: u16, tls: Option<&Tls>) -> Server {
    let listen = match tls {
        Some(t) => format!(
            "listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {};",
            t.cert.display(),
            t.key.display()
        ),
        None => format!("listen 127.0.0.1:{port};"),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         server {{ {listen} root {root}; location / {{ autoindex on; }} }}\n}}\n",
        root = root.display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(find("nginx"))
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, "nginx");
    Server { port, child, dir }
}

/// vsftpd serving `root` to anonymous users (LIST only: vsftpd has no MLSD).
pub fn vsftpd(root: &Path) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pasv = free_port();
    std::fs::create_dir_all("/var/run/vsftpd/empty").unwrap();
    let conf = format!(
        "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nanonymous_enable=YES\nlocal_enable=NO\nwrite_enable=NO\n\
         anon_root={root}\nno_anon_password=YES\npasv_enable=YES\npasv_min_port={pasv}\npasv_max_port={pasv}\npasv_address=127.0.0.1\n\
         seccomp_sandbox=NO\nbackground=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\nxferlog_enable=NO\nuse_localtime=NO\n",
        root = root.display()
    );
    let conf_path = dir.path().join("vsftpd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(find("vsftpd"))
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, "vsftpd");
    Server { port, child, dir }
}

/// A TCP server (in a thread) that runs `handler` on every connection.
#[derive(Debug)]
pub struct TcpFake {
    pub port: u16,
}

impl TcpFake {
    pub fn start(handler: fn(std::net::TcpStream)) -> TcpFake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || handler(stream));
            }
        });
        TcpFake { port }
    }
}

/// Answers every request with `503 Service Unavailable`.
pub fn http_503(mut stream: std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf);
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

/// Accepts and never says anything.
pub fn stall(stream: std::net::TcpStream) {
    std::thread::sleep(Duration::from_secs(60));
    drop(stream);
}

/// Answers every HTTP request with a body that is not an index page.
pub fn http_garbage(mut stream: std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = std::io::Read::read(&mut stream, &mut buf);
    let body = "\u{0}\u{1}binary junk, no links at all \u{7f}";
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Sends the start of an index page, then stalls.
pub fn http_stall_mid_page(mut stream: std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = std::io::Read::read(&mut stream, &mut buf);
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n<html><pre><a href=\"a.iso\">a.iso</a>"
    );
    std::thread::sleep(Duration::from_secs(60));
}

/// An index page that never ends.
pub fn http_endless(mut stream: std::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = std::io::Read::read(&mut stream, &mut buf);
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = "<a href=\"x\">x</a> 22-Nov-2026 01:02 1\n".repeat(100);
    loop {
        if write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
            return;
        }
    }
}

/// An FTP server that logs anyone in and answers listings with `LISTING` lines forever or
/// with garbage, depending on the command's path: `/endless/`, `/garbage/`, `/stall/`.
pub fn ftp_hostile(stream: std::net::TcpStream) {
    use std::io::{BufRead, BufReader};
    let mut out = stream.try_clone().unwrap();
    let mut lines = BufReader::new(stream);
    let _ = write!(out, "220 hostile\r\n");
    let mut data: Option<TcpListener> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "USER" => "331 password\r\n".to_owned(),
            "PASS" => "230 in\r\n".to_owned(),
            "FEAT" => "211-Features:\r\n MLST type*;size*;modify*;\r\n211 End\r\n".to_owned(),
            "TYPE" | "OPTS" => "200 ok\r\n".to_owned(),
            "PASV" => {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let p = l.local_addr().unwrap().port();
                data = Some(l);
                format!(
                    "227 Entering Passive Mode (127,0,0,1,{},{})\r\n",
                    p / 256,
                    p % 256
                )
            }
            "EPSV" => {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let p = l.local_addr().unwrap().port();
                data = Some(l);
                format!("229 Entering Extended Passive Mode (|||{p}|)\r\n")
            }
            "MLSD" | "LIST" => {
                let _ = write!(out, "150 here it comes\r\n");
                let Some(l) = data.take() else { return };
                let (mut d, _) = l.accept().unwrap();
                if cmd.contains("/garbage") {
                    let _ = write!(d, "this is not a listing\r\n");
                } else if cmd.contains("/stall") {
                    let _ = write!(d, "type=file;size=1;modify=20261122010203; a\r\n");
                    std::thread::sleep(Duration::from_secs(60));
                } else {
                    let mut i = 0u64;
                    loop {
                        i += 1;
                        if write!(d, "type=file;size=1;modify=20261122010203; f{i}\r\n").is_err() {
                            return;
                        }
                    }
                }
                drop(d);
                "226 done\r\n".to_owned()
            }
            "QUIT" => {
                let _ = write!(out, "221 bye\r\n");
                return;
            }
            _ => "502 no\r\n".to_owned(),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
