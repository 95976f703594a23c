//! Renewal round trips between `ServerChannel` and `ClientChannel` in memory
//! (PROTOCOL.md 2.1): frame-count and timer triggers, client-initiated INIT,
//! old keys accepted until the first new-key frame, one request at a time,
//! the hold, the Python variant, and the broken-rule cases.

use super::messages::{self, Object};
use super::tests::{client_to_server, connect, object, policy, server_to_client};
use super::*;
use crate::crypto::test_vectors::LOW_ORDER_POINTS;
use crate::crypto::{b64_decode, b64_encode, KeyPair};
use serde_json::json;
use std::time::{Duration, Instant};

const HOLD: Duration = Duration::from_millis(200);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Seals `n` commands server -> client and checks the client reads them.
fn send_frames(server: &mut ServerChannel, client: &mut ClientChannel, n: u32, now: Instant) {
    for _ in 0..n {
        server_to_client(server, client, now);
    }
}

fn control_reply(inbound: Inbound) -> String {
    match inbound {
        Inbound::Control(Some(reply)) => reply,
        other => panic!("expected a control reply, got {other:?}"),
    }
}

fn client_control_reply(inbound: ClientInbound) -> String {
    match inbound {
        ClientInbound::Control(Some(reply)) => reply,
        other => panic!("expected a control reply, got {other:?}"),
    }
}

/// The decrypted message inside a frame the client can read (test only:
/// peeks with the client's current keys).
fn peek(client: &ClientChannel, frame: &str) -> Object {
    let frame = Frame::parse(frame).unwrap();
    let plaintext = frame.open(client.sending_keys()).unwrap();
    serde_json::from_slice(&plaintext).unwrap()
}

/// Server request -> client INIT -> server RESPONSE -> client switch.
fn complete_requested_renewal(
    server: &mut ServerChannel,
    client: &mut ClientChannel,
    request: &str,
    now: Instant,
) {
    let init = client_control_reply(client.open(request).unwrap());
    let response = control_reply(server.open(&init, now).unwrap());
    assert_eq!(
        client.open(&response).unwrap(),
        ClientInbound::Control(None)
    );
}

#[test]
fn server_renews_after_frame_threshold() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(3, 3600, 200), ClientRenewalMode::Immediate, now);
    send_frames(&mut server, &mut client, 2, now);
    assert_eq!(server.poll_renewal(now), None);
    send_frames(&mut server, &mut client, 1, now);
    assert_eq!(server.next_deadline(), Some(now));
    let request = server
        .poll_renewal(now)
        .expect("renewal due after 3 frames");
    let shown = peek(&client, &request);
    assert_eq!(shown["type"], "RENEGOTIATE_REQUEST");
    assert_eq!(
        b64_decode(shown["public_key"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(
        b64_decode(shown["salt"].as_str().unwrap()).unwrap().len(),
        32
    );

    let old_aes = *server.sending_keys().raw_keys_for_tests().0;
    let init = client_control_reply(client.open(&request).unwrap());
    let init_shown = peek(&client, &init);
    assert_eq!(init_shown["type"], "RENEGOTIATE_INIT");
    assert_eq!(init_shown["immediate"], true);
    let response = control_reply(server.open(&init, now).unwrap());
    assert_eq!(peek(&client, &response)["type"], "RENEGOTIATE_RESPONSE");
    assert_eq!(server.renewals_completed(), 1);
    assert_ne!(*server.sending_keys().raw_keys_for_tests().0, old_aes);
    assert!(!server.output_held(now), "immediate client: no hold");

    assert_eq!(
        client.open(&response).unwrap(),
        ClientInbound::Control(None)
    );
    assert_eq!(client.renewals_completed(), 1);
    server_to_client(&mut server, &mut client, now);
    client_to_server(&mut client, &mut server, now);
}

#[test]
fn counters_reset_and_renewal_repeats() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(3, 3600, 200), ClientRenewalMode::Immediate, now);
    for round in 1..=3u64 {
        let already = server.frames_counted();
        send_frames(&mut server, &mut client, 3 - already, now);
        let request = server.poll_renewal(now).unwrap();
        assert_eq!(server.frames_counted(), 3, "the request is not counted");
        complete_requested_renewal(&mut server, &mut client, &request, now);
        assert_eq!(server.frames_counted(), 0);
        assert_eq!(server.renewals_completed(), round);
        assert_eq!(client.renewals_completed(), round);
        assert_eq!(server.poll_renewal(now), None);
        client_to_server(&mut client, &mut server, now);
        send_frames(&mut server, &mut client, 2, now);
        assert_eq!(server.frames_counted(), 2);
        assert_eq!(server.poll_renewal(now), None);
    }
}

#[test]
fn inbound_frames_do_not_count() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(3, 3600, 200), ClientRenewalMode::Immediate, now);
    for _ in 0..10 {
        client_to_server(&mut client, &mut server, now);
    }
    assert_eq!(server.frames_counted(), 0);
    assert_eq!(server.poll_renewal(now), None);
}

#[test]
fn server_renews_on_timer_when_idle() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(1000, 60, 200), ClientRenewalMode::Immediate, now);
    assert_eq!(server.next_deadline(), Some(now + secs(60)));
    assert_eq!(server.poll_renewal(now + secs(59)), None);
    let fired = now + secs(60);
    let request = server.poll_renewal(fired).expect("timer renewal");
    assert_eq!(
        server.next_deadline(),
        Some(fired + secs(60)),
        "timer re-armed"
    );
    let later = fired + secs(5);
    complete_requested_renewal(&mut server, &mut client, &request, later);
    assert_eq!(server.renewals_completed(), 1);
    assert_eq!(
        server.next_deadline(),
        Some(later + secs(60)),
        "re-armed at completion"
    );
    server_to_client(&mut server, &mut client, later);
    client_to_server(&mut client, &mut server, later);
}

#[test]
fn random_timer_stays_within_policy() {
    let now = Instant::now();
    let policy = RenewalPolicy::default();
    for _ in 0..20 {
        let (server, _) = connect(policy.clone(), ClientRenewalMode::Immediate, now);
        let deadline = server.next_deadline().unwrap();
        assert!(deadline >= now + secs(1800) && deadline <= now + secs(3600));
    }
}

#[test]
fn never_two_requests_in_flight() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(3, 600, 200), ClientRenewalMode::Immediate, now);
    send_frames(&mut server, &mut client, 3, now);
    let first = server.poll_renewal(now).unwrap();
    assert!(server.request_pending());
    // The client never answers; many more frames do not trigger again.
    for _ in 0..20 {
        send_frames(&mut server, &mut client, 1, now);
        assert_eq!(server.poll_renewal(now + secs(10)), None);
    }
    assert_eq!(
        server.next_deadline(),
        Some(now + secs(600)),
        "only the timer remains"
    );
    assert_eq!(server.poll_renewal(now + secs(599)), None);
    // The next time trigger asks again (the first one is abandoned).
    let second = server
        .poll_renewal(now + secs(600))
        .expect("time trigger asks again");
    assert_ne!(
        peek(&client, &first)["public_key"],
        peek(&client, &second)["public_key"]
    );
    assert_eq!(server.renewals_completed(), 0);
    complete_requested_renewal(&mut server, &mut client, &second, now + secs(601));
    assert_eq!(server.renewals_completed(), 1);
    assert!(!server.request_pending());
    server_to_client(&mut server, &mut client, now + secs(601));
}

#[test]
fn client_initiated_renewal() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let init = client.request_renewal().expect("first INIT");
    assert!(client.renewal_in_flight());
    assert_eq!(client.request_renewal(), None, "one INIT in flight");
    let response = control_reply(server.open(&init, now).unwrap());
    assert_eq!(
        client.open(&response).unwrap(),
        ClientInbound::Control(None)
    );
    assert!(!client.renewal_in_flight());
    assert_eq!(
        (server.renewals_completed(), client.renewals_completed()),
        (1, 1)
    );
    client_to_server(&mut client, &mut server, now);
    server_to_client(&mut server, &mut client, now);
    assert!(
        client.request_renewal().is_some(),
        "a new INIT once answered"
    );
}

#[test]
fn client_ignores_request_while_own_init_in_flight() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(1, 3600, 200), ClientRenewalMode::Immediate, now);
    let init = client.request_renewal().unwrap();
    send_frames(&mut server, &mut client, 1, now);
    let request = server.poll_renewal(now).unwrap();
    assert_eq!(client.open(&request).unwrap(), ClientInbound::Control(None));
    let response = control_reply(server.open(&init, now).unwrap());
    assert!(!server.request_pending(), "the INIT answered the request");
    client.open(&response).unwrap();
    server_to_client(&mut server, &mut client, now);
    client_to_server(&mut client, &mut server, now);
}

#[test]
fn old_keys_accepted_until_first_new_key_frame() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let init = client.request_renewal().unwrap();
    // Frames the client sent under the old keys before it read the response.
    let old_a = client.seal(r#"{"type":"OLD_A"}"#);
    let old_b = client.seal(r#"{"type":"OLD_B"}"#);
    let old_c = client.seal(r#"{"type":"OLD_C"}"#);
    let response = control_reply(server.open(&init, now).unwrap());
    assert!(matches!(server.open(&old_a, now), Ok(Inbound::Command(c)) if c["type"] == "OLD_A"));
    assert!(matches!(server.open(&old_b, now), Ok(Inbound::Command(c)) if c["type"] == "OLD_B"));
    client.open(&response).unwrap();
    client_to_server(&mut client, &mut server, now);
    // The old keys are forgotten now.
    assert_eq!(server.open(&old_c, now).unwrap_err(), ChannelError::BadMac);
}

#[test]
fn server_sends_under_new_keys_right_after_response() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let before = server.seal(r#"{"type":"BEFORE"}"#, now);
    let init = client.request_renewal().unwrap();
    let response = control_reply(server.open(&init, now).unwrap());
    let after = server.seal(r#"{"type":"AFTER"}"#, now);
    assert!(matches!(
        client.open(&before),
        Ok(ClientInbound::Command(_))
    ));
    // Before reading the response the client cannot read the new frame.
    assert!(!Frame::parse(&after)
        .unwrap()
        .verifies_under(client.sending_keys()));
    client.open(&response).unwrap();
    assert!(matches!(client.open(&after), Ok(ClientInbound::Command(c)) if c["type"] == "AFTER"));
}

#[test]
fn mobile_like_client_gets_a_hold_until_new_key_frame() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(3, 3600, 200), ClientRenewalMode::MobileLike, now);
    send_frames(&mut server, &mut client, 3, now);
    let request = server.poll_renewal(now).unwrap();
    let init = client_control_reply(client.open(&request).unwrap());
    assert!(peek(&client, &init).get("immediate").is_none());
    let response = control_reply(server.open(&init, now).unwrap());
    assert!(server.output_held(now));
    assert!(server.output_held(now + HOLD - Duration::from_millis(1)));
    assert_eq!(server.next_deadline(), Some(now + HOLD));
    client.open(&response).unwrap();
    client_to_server(&mut client, &mut server, now + Duration::from_millis(5));
    assert!(
        !server.output_held(now + Duration::from_millis(5)),
        "new-key frame ends the hold"
    );
    assert_ne!(server.next_deadline(), Some(now + HOLD));
    server_to_client(&mut server, &mut client, now);
}

#[test]
fn hold_ends_after_the_hold_time() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::MobileLike, now);
    let init = client.request_renewal().unwrap();
    let _response = control_reply(server.open(&init, now).unwrap());
    assert!(server.output_held(now));
    assert!(!server.output_held(now + HOLD));
    // While held, no request goes out even if the timer is past.
    assert_eq!(server.poll_renewal(now + Duration::from_millis(100)), None);
    assert_eq!(server.poll_renewal(now + HOLD), None);
    assert_ne!(
        server.next_deadline(),
        Some(now + HOLD),
        "expired hold cleared by poll"
    );
    assert!(!server.output_held(now + HOLD));
}

#[test]
fn timer_request_waits_for_the_hold() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(50, 60, 200), ClientRenewalMode::MobileLike, now);
    let t = now + secs(59);
    let init = client.request_renewal().unwrap();
    control_reply(server.open(&init, t).unwrap());
    assert!(server.output_held(t));
    assert_eq!(server.poll_renewal(t + Duration::from_millis(10)), None);
    assert_eq!(server.next_deadline(), Some(t + HOLD));
}

#[test]
fn immediate_init_or_zero_hold_skips_the_hold() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let init = client.request_renewal().unwrap();
    control_reply(server.open(&init, now).unwrap());
    assert!(!server.output_held(now));

    let (mut server, mut client) = connect(policy(50, 3600, 0), ClientRenewalMode::MobileLike, now);
    let init = client.request_renewal().unwrap();
    control_reply(server.open(&init, now).unwrap());
    assert!(!server.output_held(now));
}

#[test]
fn python_variant_renewal() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(3, 3600, 200), ClientRenewalMode::PythonVariant, now);
    send_frames(&mut server, &mut client, 3, now);
    let request = server.poll_renewal(now).unwrap();
    let response = client_control_reply(client.open(&request).unwrap());
    let shown = peek_old(&server, &response);
    assert_eq!(shown["type"], "RENEGOTIATE_RESPONSE");
    assert_eq!(client.renewals_completed(), 1);
    // The server sent this before reading the response: old keys, still
    // readable by the client.
    let in_flight = server.seal(r#"{"type":"IN_FLIGHT"}"#, now);
    assert!(matches!(
        client.open(&in_flight),
        Ok(ClientInbound::Command(_))
    ));

    assert_eq!(server.open(&response, now).unwrap(), Inbound::Control(None));
    assert_eq!(server.renewals_completed(), 1);
    assert!(!server.output_held(now), "no hold in the Python variant");
    assert_eq!(server.frames_counted(), 0);
    server_to_client(&mut server, &mut client, now);
    client_to_server(&mut client, &mut server, now);
    // A second response for the same request is unsolicited.
    let again = client.seal(&messages::renegotiate_response(
        &KeyPair::generate().public_bytes(),
    ));
    assert_eq!(
        server.open(&again, now).unwrap_err(),
        ChannelError::UnsolicitedResponse
    );
}

/// The decrypted message of a frame sealed under the server's current keys.
fn peek_old(server: &ServerChannel, frame: &str) -> Object {
    let plaintext = Frame::parse(frame)
        .unwrap()
        .open(server.sending_keys())
        .unwrap();
    serde_json::from_slice(&plaintext).unwrap()
}

#[test]
fn unsolicited_response_is_a_broken_rule() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let response = client.seal(&messages::renegotiate_response(
        &KeyPair::generate().public_bytes(),
    ));
    let error = server.open(&response, now).unwrap_err();
    assert_eq!(error, ChannelError::UnsolicitedResponse);
    assert_eq!(error.close_code(), 1008);
}

#[test]
fn client_rejects_unsolicited_response() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let response = messages::renegotiate_response(&KeyPair::generate().public_bytes());
    let frame = server.seal(&response, now);
    assert_eq!(
        client.open(&frame).unwrap_err(),
        ChannelError::UnsolicitedResponse
    );
}

#[test]
fn init_with_low_order_or_bad_key_is_rejected() {
    let now = Instant::now();
    for point in LOW_ORDER_POINTS {
        let (mut server, mut client) =
            connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
        let init = client.seal(&messages::renegotiate_init(&point, &[1; 32], true));
        let error = server.open(&init, now).unwrap_err();
        assert_eq!(
            error,
            ChannelError::BadKey {
                context: "RENEGOTIATE_INIT",
                source: crate::crypto::CryptoError::LowOrderKey
            }
        );
        assert_eq!(error.close_code(), 1008);
        assert_eq!(server.renewals_completed(), 0);
    }
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let short = client.seal(&messages::renegotiate_init(&[9; 31], &[1; 32], true));
    assert_eq!(server.open(&short, now).unwrap_err().close_code(), 1008);
    let missing = client.seal(r#"{"type":"RENEGOTIATE_INIT","salt":"AAAA"}"#);
    assert_eq!(
        server.open(&missing, now).unwrap_err(),
        ChannelError::MissingField("public_key")
    );
}

#[test]
fn python_response_with_low_order_key_is_rejected() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(1, 3600, 200), ClientRenewalMode::Immediate, now);
    send_frames(&mut server, &mut client, 1, now);
    server.poll_renewal(now).unwrap();
    let response = client.seal(&messages::renegotiate_response(&[0u8; 32]));
    assert_eq!(server.open(&response, now).unwrap_err().close_code(), 1008);
}

/// Two INITs sent back to back under the old keys (e.g. an unprompted one
/// crossing a prompted one): each is answered once, under the keys it came
/// in; the keys of the last one win.
#[test]
fn every_init_answered_once_and_last_wins() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    let offers = [KeyPair::generate(), KeyPair::generate()];
    let salts = [[1u8; 32], [2u8; 32]];
    let inits: Vec<String> = offers
        .iter()
        .zip(&salts)
        .map(|(pair, salt)| {
            client.seal(&messages::renegotiate_init(
                &pair.public_bytes(),
                salt,
                true,
            ))
        })
        .collect();
    let old_keys_reader = |frame: &str| peek(&client, frame);
    let responses: Vec<String> = inits
        .iter()
        .map(|init| control_reply(server.open(init, now).unwrap()))
        .collect();
    let mut keys = Vec::new();
    for ((response, pair), salt) in responses.iter().zip(&offers).zip(&salts) {
        let shown = old_keys_reader(response);
        assert_eq!(
            shown["type"], "RENEGOTIATE_RESPONSE",
            "sealed under old keys"
        );
        let server_public = b64_decode(shown["public_key"].as_str().unwrap()).unwrap();
        keys.push(messages::derive_channel_keys(pair, &server_public, salt, "test").unwrap());
    }
    assert_eq!(server.renewals_completed(), 2);
    let reply = server.seal(r#"{"type":"X"}"#, now);
    let reply = Frame::parse(&reply).unwrap();
    assert!(!reply.verifies_under(&keys[0]));
    assert!(reply.verifies_under(&keys[1]));
    let from_first = Frame::seal(&keys[0], br#"{"type":"A"}"#);
    assert_eq!(
        server.open(&from_first, now).unwrap_err(),
        ChannelError::BadMac
    );
    let from_second = Frame::seal(&keys[1], br#"{"type":"B"}"#);
    assert!(matches!(
        server.open(&from_second, now),
        Ok(Inbound::Command(_))
    ));
}

#[test]
fn other_renegotiation_types_never_reach_commands() {
    let now = Instant::now();
    let (mut server, mut client) =
        connect(policy(50, 3600, 200), ClientRenewalMode::Immediate, now);
    for kind in ["RENEGOTIATE_REQUEST", "RENEGOTIATE_SOMETHING"] {
        let frame =
            client.seal(&json!({"type": kind, "public_key": b64_encode(&[7; 32])}).to_string());
        assert_eq!(server.open(&frame, now).unwrap(), Inbound::Control(None));
    }
    assert_eq!(server.renewals_completed(), 0);
    let frame = server.seal(r#"{"type":"RENEGOTIATE_INIT"}"#, now);
    assert_eq!(client.open(&frame).unwrap(), ClientInbound::Control(None));
    let command = object(json!({"type": "renegotiate_init"}));
    let frame = client.seal(&serde_json::Value::Object(command.clone()).to_string());
    assert_eq!(server.open(&frame, now).unwrap(), Inbound::Command(command));
}

#[test]
fn open_text_answers_renewal_and_returns_application_text_unchanged() {
    let now = Instant::now();
    let (mut server, mut client) = connect(policy(1, 3600, 200), ClientRenewalMode::Immediate, now);
    let message = r#"{"type":"E2E_MSG","from":"b\u00e9","payload":{"n":1}}"#;
    let frame = server.seal(message, now);
    assert_eq!(
        client.open_text(&frame).unwrap(),
        ClientInbound::Command(message.to_string())
    );

    let request = server.poll_renewal(now).expect("renewal due after 1 frame");
    let init = match client.open_text(&request).unwrap() {
        ClientInbound::Control(Some(init)) => init,
        other => panic!("expected the INIT reply, got {other:?}"),
    };
    let response = control_reply(server.open(&init, now).unwrap());
    assert_eq!(
        client.open_text(&response).unwrap(),
        ClientInbound::Control(None)
    );
    assert_eq!(client.renewals_completed(), 1);

    // A channel message whose type is escaped is still recognised (full parse).
    let escaped = server.seal(r#"{"type":"RENEGOTIATE_\u0058"}"#, now);
    assert_eq!(
        client.open_text(&escaped).unwrap(),
        ClientInbound::Control(None)
    );
    for bad in ["[1]", "{\"type\":3}", "{}", "not json"] {
        let frame = server.seal(bad, now);
        assert_eq!(
            client.open_text(&frame),
            Err(ChannelError::BadPlaintext),
            "{bad}"
        );
    }
}
