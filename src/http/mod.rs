//! Plain HTTP on the chat port.
//!
//! Every connection starts here: [`read_head`] reads the request head
//! (bounded in size, under the connection's handshake deadline). A WebSocket
//! upgrade goes on to the chat (the connection replays the head to
//! tungstenite); any other request is answered by the [`Router`] with one
//! [`Response`], and the connection is closed (`Connection: close`: no
//! keep-alive, so an HTTP client holds a connection slot only for one
//! request).
//!
//! This module knows requests and responses, not what is served: the web
//! page, `/healthz` and `/metrics` are [`Handler`]s registered by the server.

mod request;
mod response;

pub use request::{read_head, HttpError, RequestHead, MAX_HEAD_BYTES};
pub use response::Response;

use std::net::SocketAddr;

/// Something the server answers over plain HTTP.
pub trait Handler: Send + Sync {
    /// The response to `request`, or `None` if this handler does not serve
    /// its path.
    fn respond(&self, request: &RequestHead, peer: SocketAddr) -> Option<Response>;
}

/// The handlers, asked in order; the first answer wins, else 404.
#[derive(Default)]
pub struct Router {
    handlers: Vec<Box<dyn Handler>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a handler after the ones already there.
    pub fn add(&mut self, handler: impl Handler + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// The answer to one request that is not a WebSocket upgrade.
    pub fn respond(&self, request: &RequestHead, peer: SocketAddr) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            return Response::text(405, "only GET and HEAD are served here\n")
                .with_header("Allow", "GET, HEAD");
        }
        self.handlers
            .iter()
            .find_map(|handler| handler.respond(request, peer))
            .unwrap_or_else(|| Response::text(404, "not found\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hello;

    impl Handler for Hello {
        fn respond(&self, request: &RequestHead, _peer: SocketAddr) -> Option<Response> {
            (request.path() == "/hello").then(|| Response::text(200, "hi\n"))
        }
    }

    fn head(raw: &str) -> RequestHead {
        RequestHead::parse(raw.as_bytes())
            .expect("valid")
            .expect("complete")
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().expect("address")
    }

    #[test]
    fn the_router_asks_handlers_then_answers_404() {
        let mut router = Router::new();
        router.add(Hello);
        let found = router.respond(&head("GET /hello?x=1 HTTP/1.1\r\n\r\n"), peer());
        assert_eq!(found.status, 200);
        let missing = router.respond(&head("GET /other HTTP/1.1\r\n\r\n"), peer());
        assert_eq!(missing.status, 404);
    }

    #[test]
    fn methods_other_than_get_and_head_get_405() {
        let router = Router::new();
        let answer = router.respond(&head("POST /hello HTTP/1.1\r\n\r\n"), peer());
        assert_eq!(answer.status, 405);
    }
}
