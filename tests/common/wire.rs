//! Hand-written non-flexible Kafka primitives for the tests that speak versions the wire
//! library no longer encodes (Kafka 3.9's oldest): a body builder and a response reader that
//! panics on anything short.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A request body, field by field.
#[derive(Default)]
pub struct Body(pub BytesMut);

impl Body {
    pub fn i8(mut self, v: i8) -> Self {
        self.0.put_i8(v);
        self
    }
    pub fn i16(mut self, v: i16) -> Self {
        self.0.put_i16(v);
        self
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.0.put_i32(v);
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.put_i64(v);
        self
    }
    pub fn str(mut self, s: &str) -> Self {
        self.0.put_i16(s.len() as i16);
        self.0.put_slice(s.as_bytes());
        self
    }
    pub fn null_str(mut self) -> Self {
        self.0.put_i16(-1);
        self
    }
}

/// Read a response body field by field.
pub struct Reader(pub Bytes);

impl Reader {
    pub fn i8(&mut self) -> i8 {
        self.0.get_i8()
    }
    pub fn i16(&mut self) -> i16 {
        self.0.get_i16()
    }
    pub fn i32(&mut self) -> i32 {
        self.0.get_i32()
    }
    pub fn i64(&mut self) -> i64 {
        self.0.get_i64()
    }
    pub fn str(&mut self) -> Option<String> {
        let n = self.0.get_i16();
        (n >= 0).then(|| String::from_utf8(self.0.split_to(n as usize).to_vec()).unwrap())
    }
    pub fn bytes(&mut self) -> Option<Bytes> {
        let n = self.0.get_i32();
        (n >= 0).then(|| self.0.split_to(n as usize))
    }
    pub fn done(&self) {
        assert!(self.0.is_empty(), "{} trailing bytes in the response", self.0.len());
    }
}

/// One message of a v0/v1 message set: (offset, magic, timestamp or -1, key, value).
pub type Message = (i64, i8, i64, Option<Bytes>, Option<Bytes>);

/// The messages of a v0/v1 message set, each CRC checked.
pub fn message_set(mut set: Bytes) -> Vec<Message> {
    let mut out = Vec::new();
    while !set.is_empty() {
        let offset = set.get_i64();
        let size = set.get_i32() as usize;
        let mut m = set.split_to(size);
        let crc = m.get_u32();
        assert_eq!(crc32fast::hash(&m), crc, "message CRC at offset {offset}");
        let mut r = Reader(m);
        let magic = r.i8();
        assert_eq!(r.i8(), 0, "attributes: uncompressed, CreateTime");
        let ts = if magic == 1 { r.i64() } else { -1 };
        let key = r.bytes();
        let value = r.bytes();
        r.done();
        out.push((offset, magic, ts, key, value));
    }
    out
}
