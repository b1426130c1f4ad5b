//! What an adversarial caller found, each checked from outside: requests
//! that do not decode are the caller's fault, on every RPC.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{Buf, BufMut};
use common::{Backend, Harness, reason};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends bytes as they are, as a client with a broken encoder would.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(h: &Harness, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(h.channel.clone());
    grpc.ready().await.unwrap();
    // The admin token, so admin RPCs get as far as decoding.
    grpc.unary(
        common::admin(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect_err("a message that does not decode must be refused")
}

/// A length-delimited field 1 holding bytes that are not UTF-8.
const NOT_UTF8: &[u8] = &[0x0a, 0x07, b'v', b'e', b'l', b'_', 0xff, 0xfe, 0x80];

#[tokio::test]
async fn requests_that_do_not_decode_are_invalid_argument_on_every_rpc() {
    let h = Harness::start(Backend::Sqlite).await;
    for path in [
        "/velocity.auth.v1.AuthService/Authenticate",
        "/velocity.auth.v1.AuthService/CreateKey",
        "/velocity.auth.v1.AuthService/RevokeKey",
        "/velocity.auth.v1.AuthService/ExchangeCode",
        "/velocity.auth.v1.AuthService/RefreshToken",
        "/velocity.auth.v1.AuthService/ListKeys",
        "/velocity.auth.v1.DirectoryService/CreateUser",
        "/velocity.auth.v1.DirectoryService/ListMemberships",
        "/velocity.auth.v1.OAuthAppService/RegisterApp",
        "/velocity.auth.v1.OAuthAppService/DeleteApp",
    ] {
        let status = raw_call(&h, path, NOT_UTF8.to_vec()).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(reason(&status), "INVALID_ARGUMENT", "{path}");
        // Truncated: a length prefix longer than the message.
        let status = raw_call(&h, path, vec![0x0a, 0x40, b'x']).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
    }
    h.stop().await;
}
