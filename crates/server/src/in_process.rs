//! The services the HTTP gateway calls, in-process: the same tonic servers
//! the gRPC port serves (codec, authorization, error statuses), reached
//! through a tonic client over a `Routes` value instead of a socket.
//! Messages pass through as bytes: the gateway encodes and decodes them
//! from the descriptors. Only AuthService and OAuthAppService are here, so
//! whatever an annotation says, DirectoryService stays operator-only, on
//! the gRPC port.

use bytes::{Buf, BufMut, Bytes};
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Routes;
use tonic::{Request, Status};
use velocity_domain::Service;
use velocity_domain::admin::AdminToken;
use velocity_proto::pb;

use crate::app_service::OAuthAppApi;
use crate::auth_service::AuthApi;

#[derive(Clone)]
pub struct LocalGrpc {
    client: Grpc<Routes>,
}

impl LocalGrpc {
    pub fn new(service: Service, admin_token: AdminToken) -> Self {
        let routes = Routes::new(pb::auth_service_server::AuthServiceServer::new(
            AuthApi::new(service.clone()),
        ))
        .add_service(pb::o_auth_app_service_server::OAuthAppServiceServer::new(
            OAuthAppApi::new(service, admin_token),
        ));
        LocalGrpc {
            client: Grpc::new(routes),
        }
    }

    /// Calls the unary RPC at `path` with an encoded request.
    pub async fn unary(
        &self,
        path: &str,
        authorization: Option<AsciiMetadataValue>,
        message: Bytes,
    ) -> Result<Bytes, Status> {
        let path = PathAndQuery::try_from(path)
            .map_err(|_| Status::unimplemented("not a gRPC method path"))?;
        let mut request = Request::new(message);
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value);
        }
        let mut client = self.client.clone();
        client
            .ready()
            .await
            .map_err(|e| Status::internal(format!("in-process gRPC not ready: {e}")))?;
        let response = client.unary(request, path, Passthrough).await?;
        Ok(response.into_inner())
    }
}

/// Bytes in, bytes out: the messages are already encoded.
#[derive(Clone, Copy, Debug, Default)]
struct Passthrough;

impl Codec for Passthrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Passthrough;
    type Decoder = Passthrough;

    fn encoder(&mut self) -> Self::Encoder {
        Passthrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        Passthrough
    }
}

impl Encoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
