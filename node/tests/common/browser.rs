//! Headless browsers driven the way their own tools drive them: Chromium over the DevTools
//! protocol (a WebSocket), Firefox over Marionette (length-prefixed JSON on a TCP socket).
//! Open a page, evaluate JavaScript in it, take a screenshot. For the dashboard's test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How the test talks to the browser.
enum Driver {
    DevTools {
        runtime: tokio::runtime::Runtime,
        socket: Box<Socket>,
        next_id: u64,
    },
    Marionette {
        reader: BufReader<TcpStream>,
        stream: TcpStream,
        next_id: u64,
    },
}

/// A headless browser with one page open.
pub struct Browser {
    /// `chromium` or `firefox`.
    pub name: &'static str,
    child: Child,
    _profile: tempfile::TempDir,
    driver: Driver,
}

/// The browsers installed here (as root, installed from apt first): Chromium and Firefox.
pub fn installed() -> Vec<(&'static str, &'static str)> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|p| super::program_or_apt(p, "chromium"));
    let firefox = ["firefox-esr", "firefox"]
        .into_iter()
        .find(|p| super::program_or_apt(p, "firefox-esr"));
    let mut found = vec![];
    if let Some(p) = chromium {
        found.push(("chromium", p));
    }
    if let Some(p) = firefox {
        found.push(("firefox", p));
    }
    found
}

impl Browser {
    /// Starts browser `name` (`chromium` or `firefox`, the program `program`) headless on `url`.
    pub fn open(name: &'static str, program: &str, url: &str) -> Self {
        match name {
            "firefox" => Self::firefox(program, url),
            _ => Self::chromium(program, url),
        }
    }

    fn chromium(program: &str, url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // It says where its DevTools endpoint is on stderr.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromium exited before it listened")
                .unwrap();
            if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse::<u16>().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let page = page_socket_url(port);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (socket, _) = runtime
            .block_on(tokio_tungstenite::connect_async(page.as_str()))
            .unwrap_or_else(|e| panic!("DevTools socket {page}: {e}"));
        Self {
            name: "chromium",
            child,
            _profile: profile,
            driver: Driver::DevTools {
                runtime,
                socket: Box::new(socket),
                next_id: 1,
            },
        }
    }

    fn firefox(program: &str, url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        // Marionette on a free port, which Firefox writes to MarionetteActivePort; no
        // first-run pages.
        std::fs::write(
            profile.path().join("user.js"),
            "user_pref(\"marionette.port\", 0);\n\
             user_pref(\"browser.shell.checkDefaultBrowser\", false);\n\
             user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);\n\
             user_pref(\"browser.aboutwelcome.enabled\", false);\n",
        )
        .unwrap();
        let child = Command::new(program)
            .args(["--headless", "--marionette", "--no-remote", "--profile"])
            .arg(profile.path())
            .args(["--width", "1280", "--height", "1000", "about:blank"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("firefox starts");
        let port_file = profile.path().join("MarionetteActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "firefox opened no Marionette port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let hello = read_marionette(&mut reader);
        assert_eq!(hello["applicationType"], "gecko", "{hello}");
        let mut browser = Self {
            name: "firefox",
            child,
            _profile: profile,
            driver: Driver::Marionette {
                reader,
                stream,
                next_id: 1,
            },
        };
        browser.command("WebDriver:NewSession", json!({"capabilities": {}}));
        browser.command("WebDriver:Navigate", json!({"url": url}));
        browser
    }

    /// Sends a protocol command (DevTools or Marionette, by the browser) and returns its result.
    pub fn command(&mut self, method: &str, params: Value) -> Value {
        match &mut self.driver {
            Driver::DevTools {
                runtime,
                socket,
                next_id,
            } => {
                let id = *next_id;
                *next_id += 1;
                let request = json!({"id": id, "method": method, "params": params}).to_string();
                runtime.block_on(async {
                    socket.send(Message::text(request)).await.unwrap();
                    loop {
                        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
                            .await
                            .expect("DevTools answers")
                            .expect("DevTools socket open")
                            .unwrap();
                        let Message::Text(text) = message else {
                            continue;
                        };
                        let value: Value = serde_json::from_str(&text).unwrap();
                        if value["id"] == id {
                            assert!(value.get("error").is_none(), "{method}: {value}");
                            return value["result"].clone();
                        }
                    }
                })
            }
            Driver::Marionette {
                reader,
                stream,
                next_id,
            } => {
                let id = *next_id;
                *next_id += 1;
                let body = json!([0, id, method, params]).to_string();
                stream
                    .write_all(format!("{}:{body}", body.len()).as_bytes())
                    .unwrap();
                loop {
                    let answer = read_marionette(reader);
                    if answer[1] == id {
                        assert!(answer[2].is_null(), "{method}: {answer}");
                        return answer[3].clone();
                    }
                }
            }
        }
    }

    /// Evaluates `expression` in the page; its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        match self.driver {
            Driver::DevTools { .. } => {
                let result = self.command(
                    "Runtime.evaluate",
                    json!({"expression": expression, "returnByValue": true}),
                );
                result["result"]["value"].clone()
            }
            Driver::Marionette { .. } => {
                let script = format!("return ({expression});");
                let result = self.command(
                    "WebDriver:ExecuteScript",
                    json!({"script": script, "args": []}),
                );
                result["value"].clone()
            }
        }
    }

    /// Evaluates `expression` until it is truthy (within `within`); its value.
    pub fn wait_for(&mut self, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression);
            if !matches!(value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0)
            {
                return value;
            }
            if Instant::now() >= deadline {
                let shows = self.eval("document.body.innerText");
                panic!(
                    "{}: the page never satisfied {expression}; it shows:\n{shows}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let data = match self.driver {
            Driver::DevTools { .. } => {
                self.command("Page.captureScreenshot", json!({"format": "png"}))["data"].clone()
            }
            Driver::Marionette { .. } => {
                self.command("WebDriver:TakeScreenshot", json!({"full": true}))["value"].clone()
            }
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Marionette message: `<length>:<json>`.
fn read_marionette(reader: &mut BufReader<TcpStream>) -> Value {
    let mut length = vec![];
    reader.read_until(b':', &mut length).unwrap();
    length.pop();
    let length: usize = String::from_utf8(length).unwrap().parse().unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// `GET /json/list`: the browser's targets. Its server keeps the connection open, so the body
/// is read by its Content-Length.
fn json_list(port: u16) -> Value {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The URLs in the answer name the host this header gives.
    let request = format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    (&stream).write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap_or(json!([]))
}

/// The WebSocket URL of the browser's first page, from `/json/list`.
fn page_socket_url(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let targets = json_list(port);
        if let Some(url) = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        {
            return url.to_owned();
        }
        assert!(Instant::now() < deadline, "chromium opened no page");
        std::thread::sleep(Duration::from_millis(100));
    }
}
