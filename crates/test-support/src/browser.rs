//! A real browser for page tests: Debian's headless Chromium driven through
//! ChromeDriver's W3C WebDriver protocol (plain HTTP and JSON), so a test can sign in
//! through a form, read the DOM as rendered, and save screenshots.
//!
//! `CHROMEDRIVER` (default `chromedriver` on the PATH) and `CHROMIUM` (default
//! `/usr/bin/chromium`) name the programs; `make test` installs both when missing.
//! Chromium starts with the background networking it would do on its own turned off,
//! and a fresh profile: nothing it does needs the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// A ChromeDriver process and one browser session of it: end both with [`Browser::close`]
/// (dropped, ChromeDriver is killed and Chromium may linger until it notices).
pub struct Browser {
    driver: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    profile: crate::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium `width` × `height`.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let port = crate::local_listener()?.local_addr()?.port();
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let driver = tokio::process::Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("{program} could not start ({e}): install Debian's chromium and chromium-driver")
            })?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        crate::wait_for(Duration::from_secs(20), "chromedriver to answer", || async {
            let status: Value = http.get(format!("{base}/status")).send().await.ok()?.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await?;
        let profile = crate::TempDir::new("chromium")?;
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let mut browser = Self { driver, base, http, profile };
        let session: Value = browser.call(reqwest::Method::POST, "/session", Some(caps)).await?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("chromedriver gave no session: {session}"))?
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        Ok(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"]["error"].as_str() {
            anyhow::bail!("webdriver {path}: {error}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    /// Loads `url` and waits for it.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await.map(drop)
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(self.call(reqwest::Method::GET, "/url", None).await?.as_str().unwrap_or_default().to_owned())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns
    /// what it returns. The pages under test have no script of their own: this is the
    /// test reading them.
    pub async fn run(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text})))
            .await
            .map(drop)
    }

    /// Clicks the element `css` selects (and waits for a page it loads).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await.map(drop)
    }

    async fn find(&self, css: &str) -> anyhow::Result<String> {
        let found =
            self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await?;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no element {css}"))
    }

    /// Resizes the window (the viewport follows).
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height})))
            .await
            .map(drop)
    }

    /// Saves the whole page (not just the window) as a PNG at `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        // The window is made as tall as the page first, so the screenshot holds all of it.
        let size = self
            .run("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]", json!([]))
            .await?;
        let rect = self.call(reqwest::Method::GET, "/window/rect", None).await?;
        let (width, height) = (rect["width"].as_u64().unwrap_or(1280), rect["height"].as_u64().unwrap_or(900));
        let page_height = size[1].as_u64().unwrap_or(height).clamp(300, 12_000);
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": page_height + 120})))
            .await?;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await?;
        let bytes = decode_base64(png.as_str().unwrap_or_default())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

impl Browser {
    /// Ends the session (Chromium exits) and ChromeDriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, "", None).await?;
        self.driver.kill().await?;
        drop(self.profile);
        Ok(())
    }
}

/// Where tests leave what a person should look at (screenshots): `TEST_ARTIFACTS_DIR`,
/// else `test-artifacts/` at the workspace root.
pub fn artifacts_dir(area: &str) -> PathBuf {
    let root = std::env::var_os("TEST_ARTIFACTS_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts"), PathBuf::from);
    root.join(area)
}

/// Standard base64 (ChromeDriver's screenshots).
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c).ok_or_else(|| anyhow::anyhow!("not base64"))? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap_or_default(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap_or_default(), b"hello!");
        assert_eq!(decode_base64("aGk=").unwrap_or_default(), b"hi");
    }
}
