//! What a hook sees of the request it runs for: the client's session (the
//! header, the connection; Ferry's own for an HTTP/1 request without a
//! body, else Pingora's) plus Ferry's record of the request.

use crate::client::downstream::Downstream;
use crate::record::Request;
use crate::runtime::Runtime;
use bytes::Bytes;
use ferry_filters::variables::RequestVars;
use pingora_core::protocols::http::ServerSession;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// The request a hook runs for. Pingora's hooks take the same name.
pub struct Session<'a> {
    pub(crate) downstream: &'a mut Downstream,
    pub(crate) request: &'a mut Request,
    pub(crate) runtime: &'a Runtime,
}

impl Session<'_> {
    /// The client's request header.
    pub fn req_header(&self) -> &RequestHeader {
        self.downstream.req_header()
    }

    /// The client's request header, to change before it is routed upstream.
    pub fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.downstream.req_header_mut()
    }

    /// Ferry's record of this request: route, tries, outcome.
    pub fn request(&self) -> &Request {
        self.request
    }

    /// The matched route's entry in `routes:`.
    pub fn route(&self) -> Option<&ferry_conf::Route> {
        self.request.route.map(|i| &self.runtime.routes[i].conf)
    }

    /// The loaded configuration.
    pub fn config(&self) -> &ferry_conf::Config {
        &self.runtime.config
    }

    /// Pingora's downstream session itself, for what Ferry does not wrap:
    /// an HTTP/2 stream's, or an HTTP/1 request's with a body or an
    /// upgrade. `None` for an HTTP/1 request without a body, which Ferry's
    /// own session reads and answers.
    pub fn pingora(&mut self) -> Option<&mut ServerSession> {
        self.downstream.pingora()
    }

    /// The connection's keepalive after this request (Pingora's
    /// `set_keepalive`): `None` closes it, `Some(0)` keeps it with no
    /// timeout, `Some(secs)` keeps it for that long (HTTP/1 only).
    pub fn set_keepalive(&mut self, secs: Option<u64>) {
        self.downstream.set_keepalive(secs);
    }

    /// Write the response header to the client (a hook answering itself).
    pub async fn write_response_header(&mut self, header: Box<ResponseHeader>) -> Result<()> {
        self.downstream.write_response_header(header).await
    }

    /// Write a piece of the response body; `end`: it is the last.
    pub async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.downstream.write_response_body(data, end).await
    }

    /// The next piece of the client's request body; `None` at its end.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        self.downstream.read_request_body().await
    }

    /// nginx's `subrequest_in_memory`: send `req` (its method, URI and
    /// headers; `Host` becomes the group name) with `body` to the upstream
    /// group `group`, with that group's balancer and health and this
    /// route's timeouts and retry rules, and get the answer in memory, its
    /// body at most `limit` bytes. A failure comes back as an error whose
    /// type is `HTTPStatus(502 | 504 | 500)`.
    pub async fn subrequest(
        &self,
        group: &str,
        req: RequestHeader,
        body: Bytes,
        limit: usize,
    ) -> Result<crate::upstream::subrequest::SubResponse> {
        let default = ferry_conf::ProxyConf::default();
        let proxy = self
            .request
            .route
            .map(|i| &self.runtime.routes[i].conf.proxy)
            .unwrap_or(&default);
        let ip = self.request.client_addr.map(|a| a.ip());
        crate::upstream::subrequest::fetch(
            &self.runtime.upstreams,
            proxy,
            group,
            req,
            body,
            limit,
            ip,
        )
        .await
    }

    /// Answer with Ferry's error page for `status`: the route's
    /// `error_pages` entry when it has one, else nginx's default page.
    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        let proxy = self
            .request
            .route
            .map(|i| &self.runtime.routes[i].conf.proxy);
        crate::response::respond::error(self.downstream, self.request, status, proxy, &[]).await
    }

    /// nginx's `limit_req`, asked from a hook: `key` (a tenant from a
    /// header, say) is looked up in the `limit_req_zones` entry
    /// `rule.zone` with `rule`'s burst, `nodelay`, `delay` and `dry_run`,
    /// and charged unless refused, as a route's `limit_req` would. A
    /// delay is waited out here, on a timer; `$limit_req_status` and
    /// `ferry_limit_requests_total` record the result. A `Rejected`
    /// verdict carries the refusal: return its
    /// [`into_error`](crate::LimitRefusal::into_error) from
    /// `request_filter` and the request gets `rule.status` through
    /// `fail_to_proxy` and the route's `error_pages`, as Ferry's own
    /// refusals do. An empty key is not counted.
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::conf::LimitReq;
    /// # use ferry::pingora_error::Result;
    /// /// One rate per tenant, a faster zone for the paying ones.
    /// struct PerTenant;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for PerTenant {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn request_filter(&self, s: &mut Session, _ctx: &mut ()) -> Result<bool> {
    ///         let header = |n: &str| s.req_header().headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    ///         let tenant = header("x-tenant").unwrap_or_default();
    ///         let zone = if header("x-plan").as_deref() == Some("pro") { "pro" } else { "free" };
    ///         let rule = LimitReq { zone: zone.into(), burst: 5, nodelay: true, delay: 0, status: 429, dry_run: false };
    ///         if let Some(refusal) = s.limit_req(&rule, &tenant).await?.refusal {
    ///             return Err(refusal.into_error());
    ///         }
    ///         Ok(false)
    ///     }
    /// }
    /// ```
    pub async fn limit_req(
        &mut self,
        rule: &ferry_conf::LimitReq,
        key: &str,
    ) -> Result<crate::LimitVerdict> {
        let verdict = crate::limit::api::ask(&self.runtime.limit, rule, key.as_bytes()).await?;
        if verdict.status != crate::LimitStatus::None {
            self.request.limit_req_status = verdict.status;
        }
        if !verdict.delay.is_zero() {
            tokio::time::sleep(verdict.delay).await;
        }
        Ok(verdict)
    }

    /// Pingora's one-line summary of the request (method, path, `Host`),
    /// as error lines show it.
    pub fn summary(&self) -> String {
        self.downstream.request_summary()
    }

    /// The body-length helper: call it in `response_filter` when a body
    /// filter will change the length of the body. The response is framed
    /// for this client: HTTP/1.1 gets `Transfer-Encoding: chunked`, HTTP/1.0
    /// (which cannot read chunked) a body that ends when the connection
    /// closes, HTTP/2 its own frames; `Content-Length` goes in every case.
    /// A response without a body (HEAD, 1xx, 204, 304) is left as it is.
    ///
    /// ```
    /// # use ferry::{async_trait, ProxyHttp, Session};
    /// # use ferry::pingora_error::Result;
    /// # use ferry::pingora_http::ResponseHeader;
    /// struct Rewrite;
    ///
    /// #[async_trait]
    /// impl ProxyHttp for Rewrite {
    ///     type CTX = ();
    ///     fn new_ctx(&self) {}
    ///
    ///     async fn response_filter(&self, s: &mut Session, resp: &mut ResponseHeader, _: &mut ()) -> Result<()> {
    ///         s.body_length_changes(resp)
    ///     }
    /// }
    /// ```
    pub fn body_length_changes(&mut self, response: &mut ResponseHeader) -> Result<()> {
        let status = response.status.as_u16();
        let head = self.downstream.method() == "HEAD";
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(());
        }
        response.remove_header(&http::header::CONTENT_LENGTH);
        response.remove_header(&http::header::TRANSFER_ENCODING);
        match self.downstream.version() {
            http::Version::HTTP_2 => {}
            http::Version::HTTP_11 => {
                response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
            _ => {
                // HTTP/1.0: the end of the body is the end of the connection.
                response.insert_header(http::header::CONNECTION, "close")?;
                self.downstream.set_keepalive(None);
            }
        }
        Ok(())
    }

    /// Answer the request from a hook (then return `Ok(true)` from
    /// `request_filter`).
    pub async fn respond(&mut self, mut header: ResponseHeader, body: Bytes) -> Result<()> {
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        crate::response::respond::write_whole(self.downstream, self.request, header, body).await
    }
}

impl<'a> Session<'a> {
    /// `$remote_addr` as text for rendering `templates`: made only when one
    /// of them uses the client's address (a new string each time), else
    /// empty.
    pub(crate) fn remote_text<'t>(
        &self,
        templates: impl IntoIterator<Item = &'t ferry_conf::Template>,
    ) -> String {
        use ferry_conf::Variable as V;
        let remote = |v: &V| {
            matches!(
                v,
                V::RemoteAddr | V::BinaryRemoteAddr | V::ProxyAddXForwardedFor
            )
        };
        match templates.into_iter().any(|t| t.uses(remote)) {
            true => self.request.client_ip_text(),
            false => String::new(),
        }
    }

    /// What templates see of this request, for a try to `proxy_host`.
    pub(crate) fn vars<'v>(&'v self, remote: &'v str, proxy_host: &'v str) -> RequestVars<'v> {
        let client = &*self.downstream;
        RequestVars {
            method: client.method(),
            request_uri: ferry_wire::text(client.raw_path()).unwrap_or("/"),
            uri: &self.request.uri,
            host: &self.request.host,
            headers: client.fields(),
            remote_addr: remote,
            remote_port: self.request.client_addr.map_or(0, |a| a.port()),
            scheme: self.request.scheme,
            proxy_host,
            request_id: self.request.lazy_id(),
            upstream_addr: "",
            upstream_status: "",
            upstream_cache_status: self.request.cache_status.as_str(),
            limit_req_status: self.request.limit_req_status.as_str(),
            limit_conn_status: self.request.limit_conn_status.as_str(),
            upstream_headers: None,
        }
    }
}
