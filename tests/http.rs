//! The chat port also speaks plain HTTP: a request that is not a WebSocket
//! upgrade gets one HTTP answer and the connection is closed, while chat
//! clients on the same port keep working.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{assert_server_works, Backend, TestServer};

/// Sends `request` raw and returns everything the server answered.
fn exchange(server: &TestServer, request: &[u8]) -> String {
    let address = server.url.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server closes after answering");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn plain_requests_get_http_answers_and_chat_still_works() {
    let Some(server) = TestServer::start(Backend::Sqlite) else {
        return;
    };
    let missing = exchange(&server, b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
    assert!(missing.contains("Connection: close\r\n"), "{missing}");

    let post = exchange(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");

    let garbage = exchange(&server, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );

    let mut huge = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend_from_slice(b"\r\n\r\n");
    let too_large = exchange(&server, &huge);
    assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");

    assert_server_works(&server);
}
