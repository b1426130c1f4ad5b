//! The protobuf codec of every Velocity RPC: prost's, except that a request
//! that does not decode (bad wire format, a string field that is not UTF-8)
//! is the caller's error — INVALID_ARGUMENT with our `ErrorInfo` — where
//! prost's codec reports INTERNAL, as if the server had failed.
//!
//! The decoder cannot tell a server reading a request from a client reading
//! a response; our generated clients share it, and would report a response
//! that does not decode as INVALID_ARGUMENT too. Our server never sends one.

use std::collections::HashMap;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};
use velocity_domain::Reason;

use crate::ERROR_DOMAIN;

#[derive(Debug, Clone, Default)]
pub struct VelocityCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for VelocityCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

#[derive(Debug)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Decoding straight from the buffer: prost's decoder would turn the
        // error into a Status before we could see the DecodeError.
        U::decode(buf).map(Some).map_err(|err| malformed(&err))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

fn malformed(err: &prost::DecodeError) -> Status {
    // prost's message names the field that failed, never its contents.
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("the request message does not decode: {err}"),
        ErrorDetails::with_error_info(
            Reason::InvalidArgument.as_str(),
            ERROR_DOMAIN,
            HashMap::new(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_does_not_decode_is_invalid_argument() {
        // AuthenticateRequest { credential: "vel_\xff\xfe\x80" }: field 1,
        // length-delimited, 7 bytes that are not UTF-8.
        let bytes: &[u8] = &[0x0a, 0x07, b'v', b'e', b'l', b'_', 0xff, 0xfe, 0x80];
        let err = crate::pb::AuthenticateRequest::decode(bytes).unwrap_err();
        let status = malformed(&err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert!(!status.message().contains('\u{fffd}'));
    }
}
