//! gRPC server reflection, v1 and v1alpha (tonic's), fed by the descriptors generated code
//! embeds, so `grpcurl list`, `describe` and calls work with no `.proto` at hand.

use super::{BoxedHttpService, Mux};

/// Serves reflection on `mux` for every service it holds that carries descriptors, and for
/// the health service.
pub(crate) fn add(mux: &mut Mux) -> Result<(), tonic_reflection::server::Error> {
    let sets = mux.file_descriptor_sets();
    let builder = || {
        // Each version lists both, as the server serves both.
        let builder = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        #[cfg(feature = "health")]
        let builder =
            builder.register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        sets.iter().fold(builder, |b, set| {
            b.register_encoded_file_descriptor_set(set)
        })
    };
    let v1 = builder().build_v1()?;
    let v1alpha = builder().build_v1alpha()?;
    mux.add_standard(
        BoxedHttpService::new(v1),
        "grpc.reflection.v1.ServerReflection",
    );
    mux.add_standard(
        BoxedHttpService::new(v1alpha),
        "grpc.reflection.v1alpha.ServerReflection",
    );
    Ok(())
}
