//! TEMPORARY stub until the protobuf module lands.
pub fn decode_object(_b: &[u8]) -> Result<serde_json::Value, String> {
    Err("protobuf not yet supported".into())
}
