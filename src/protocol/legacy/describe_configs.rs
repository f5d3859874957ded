//! DescribeConfigs v0.
//!
//! request:  [resource_type i8, resource_name string, config_names nullable [string]]
//!           (v1 adds include_synonyms bool)
//! response: throttle_time_ms i32, [error_code i16, error_message nullable string,
//!           resource_type i8, resource_name string,
//!           [name string, value nullable string, read_only bool, is_default bool,
//!            is_sensitive bool]]
//! v1 replaced is_default with config_source; v0's is_default is "source is the default".

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::wire;

/// `config_source` of a value that is the default (DEFAULT_CONFIG).
const DEFAULT_CONFIG: i8 = 5;

pub fn decode(buf: &mut Bytes) -> anyhow::Result<DescribeConfigsRequest> {
    let mut resources = Vec::new();
    for _ in 0..wire::count(buf, 7)? {
        let resource_type = wire::i8(buf)?;
        let resource_name = wire::string(buf)?;
        let names = match wire::nullable_count(buf, 2)? {
            None => None,
            Some(n) => Some((0..n).map(|_| wire::string(buf)).collect::<anyhow::Result<_>>()?),
        };
        resources.push(
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(resource_name)
                .with_configuration_keys(names),
        );
    }
    wire::end(buf)?;
    Ok(DescribeConfigsRequest::default().with_resources(resources))
}

pub fn encode_response(r: &DescribeConfigsResponse, buf: &mut BytesMut) -> anyhow::Result<()> {
    buf.put_i32(r.throttle_time_ms);
    wire::put_count(buf, r.results.len())?;
    for res in &r.results {
        buf.put_i16(res.error_code);
        wire::put_nullable_string(buf, res.error_message.as_deref())?;
        buf.put_i8(res.resource_type);
        wire::put_string(buf, &res.resource_name)?;
        wire::put_count(buf, res.configs.len())?;
        for c in &res.configs {
            wire::put_string(buf, &c.name)?;
            wire::put_nullable_string(buf, c.value.as_deref())?;
            buf.put_i8(i8::from(c.read_only));
            buf.put_i8(i8::from(c.config_source == DEFAULT_CONFIG));
            buf.put_i8(i8::from(c.is_sensitive));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn a_v0_request_decodes_with_null_and_listed_names() {
        let mut b = BytesMut::new();
        b.put_i32(2);
        b.put_i8(2);
        wire::put_string(&mut b, "t").unwrap();
        b.put_i32(-1);
        b.put_i8(4);
        wire::put_string(&mut b, "1").unwrap();
        b.put_i32(1);
        wire::put_string(&mut b, "x").unwrap();
        let bytes = b.freeze();
        let r = decode(&mut bytes.clone()).unwrap();
        assert_eq!(r.resources[0].configuration_keys, None);
        assert_eq!(r.resources[1].configuration_keys.as_ref().map(|k| k.len()), Some(1));
        for cut in 0..bytes.len() {
            assert!(decode(&mut bytes.slice(..cut)).is_err());
        }
    }

    #[test]
    fn is_default_comes_from_the_source() {
        let config = |source| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str("c"))
                .with_value(Some(StrBytes::from_static_str("v")))
                .with_config_source(source)
        };
        let r = DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![config(DEFAULT_CONFIG), config(1)]),
        ]);
        let mut out = BytesMut::new();
        encode_response(&r, &mut out).unwrap();
        let config_bytes = |default: u8| vec![0, 1, b'c', 0, 1, b'v', 0, default, 0];
        let mut want = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 1, b't', 0, 0, 0, 2];
        want.extend(config_bytes(1));
        want.extend(config_bytes(0));
        assert_eq!(&out[..], &want[..]);
    }
}
