//! One tonic codec for every message type: encodes an [`AnyMessage`] and decodes the type
//! a call expects through a function pointer chosen where the type is still known.

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::message::AnyMessage;

/// Decodes one message of a type fixed when the function was picked.
pub(crate) type Decode = fn(&mut DecodeBuf<'_>) -> Result<AnyMessage, Status>;

/// The [`Decode`] of `T`.
pub(crate) fn decode<T: prost::Message + Default + Clone + 'static>(
    buf: &mut DecodeBuf<'_>,
) -> Result<AnyMessage, Status> {
    T::decode(buf)
        .map(AnyMessage::new)
        .map_err(|e| Status::internal(format!("decoding {}: {e}", std::any::type_name::<T>())))
}

/// Encodes [`AnyMessage`]s and decodes with a [`Decode`].
#[derive(Clone, Copy)]
pub(crate) struct ErasedCodec(pub(crate) Decode);

impl Codec for ErasedCodec {
    type Encode = AnyMessage;
    type Decode = AnyMessage;
    type Encoder = ErasedCodec;
    type Decoder = ErasedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for ErasedCodec {
    type Item = AnyMessage;
    type Error = Status;

    fn encode(&mut self, item: AnyMessage, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_grpc(buf);
        Ok(())
    }
}

impl Decoder for ErasedCodec {
    type Item = AnyMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<AnyMessage>, Status> {
        (self.0)(buf).map(Some)
    }
}
