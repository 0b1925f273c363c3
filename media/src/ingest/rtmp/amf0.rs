//! AMF0 (Action Message Format 0), the encoding of RTMP command messages such as
//! `connect`, `createStream`, `publish` and `onStatus`.

use super::RtmpError;

/// Nesting deeper than this is refused (objects inside objects inside ...).
const MAX_DEPTH: usize = 32;
/// Elements in one array or object.
const MAX_ITEMS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    Date(f64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) | Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RtmpError> {
        let s = self
            .buf
            .get(
                self.pos
                    ..self
                        .pos
                        .checked_add(n)
                        .ok_or(RtmpError::Amf("length overflow"))?,
            )
            .ok_or(RtmpError::Amf("truncated"))?;
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self) -> Result<usize, RtmpError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, RtmpError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn f64(&mut self) -> Result<f64, RtmpError> {
        let b = self.take(8)?;
        Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn string(&mut self, len: usize) -> Result<String, RtmpError> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| RtmpError::Amf("string is not UTF-8"))
    }

    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, RtmpError> {
        let mut props = Vec::new();
        loop {
            let len = self.u16()?;
            if len == 0 && self.buf.get(self.pos) == Some(&0x09) {
                self.pos += 1;
                return Ok(props);
            }
            if props.len() >= MAX_ITEMS {
                return Err(RtmpError::Amf("too many properties"));
            }
            let key = self.string(len)?;
            props.push((key, self.value(depth + 1)?));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, RtmpError> {
        if depth > MAX_DEPTH {
            return Err(RtmpError::Amf("nested too deeply"));
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00 => Value::Number(self.f64()?),
            0x01 => Value::Boolean(self.take(1)?[0] != 0),
            0x02 => {
                let len = self.u16()?;
                Value::String(self.string(len)?)
            }
            0x03 => Value::Object(self.properties(depth)?),
            0x05 => Value::Null,
            0x06 => Value::Undefined,
            0x08 => {
                let _declared = self.u32()?; // advisory; the end marker is authoritative
                Value::EcmaArray(self.properties(depth)?)
            }
            0x0A => {
                let n = self.u32()?;
                if n > MAX_ITEMS {
                    return Err(RtmpError::Amf("array too long"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            0x0B => {
                let t = self.f64()?;
                self.take(2)?; // time zone, unused
                Value::Date(t)
            }
            0x0C => {
                let len = self.u32()?;
                Value::String(self.string(len)?)
            }
            _ => return Err(RtmpError::Amf("unsupported type marker")),
        })
    }
}

/// Decode every value of a command message body (e.g. `"publish", 5, null, "key", "live"`).
pub fn decode_all(buf: &[u8]) -> Result<Vec<Value>, RtmpError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        if out.len() >= MAX_ITEMS {
            return Err(RtmpError::Amf("too many values"));
        }
        out.push(r.value(0)?);
    }
    Ok(out)
}

/// Encode values (for `_result`, `onStatus`, ...).
pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[0x01, *b as u8]),
        Value::String(s) if s.len() <= u16::MAX as usize => {
            out.push(0x02);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::String(s) => {
            out.push(0x0C);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Object(props) | Value::EcmaArray(props) => {
            if let Value::EcmaArray(_) = v {
                out.push(0x08);
                out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            } else {
                out.push(0x03);
            }
            for (k, val) in props {
                out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                out.extend_from_slice(k.as_bytes());
                encode(out, val);
            }
            out.extend_from_slice(&[0, 0, 0x09]);
        }
        Value::Null => out.push(0x05),
        Value::Undefined => out.push(0x06),
        Value::StrictArray(items) => {
            out.push(0x0A);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                encode(out, i);
            }
        }
        Value::Date(t) => {
            out.push(0x0B);
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn obs_connect_and_publish_round_trip() {
        // What OBS sends (CLIENTS.md): connect with app/type/flashVer/tcUrl, then publish.
        let connect = vec![
            s("connect"),
            Value::Number(1.0),
            Value::Object(vec![
                ("app".into(), s("live")),
                ("type".into(), s("nonprivate")),
                ("flashVer".into(), s("FMLE/3.0 (compatible; FMSc/1.0)")),
                ("tcUrl".into(), s("rtmp://127.0.0.1/live")),
            ]),
        ];
        let publish = vec![
            s("publish"),
            Value::Number(5.0),
            Value::Null,
            s("live_key"),
            s("live"),
        ];
        for values in [connect, publish] {
            let mut buf = Vec::new();
            for v in &values {
                encode(&mut buf, v);
            }
            assert_eq!(decode_all(&buf).unwrap(), values);
        }
    }

    #[test]
    fn metadata_ecma_array_and_lookup() {
        let meta = Value::EcmaArray(vec![
            ("width".into(), Value::Number(1280.0)),
            ("videocodecid".into(), Value::Number(7.0)),
        ]);
        let mut buf = Vec::new();
        encode(&mut buf, &s("@setDataFrame"));
        encode(&mut buf, &meta);
        let got = decode_all(&buf).unwrap();
        assert_eq!(
            got[1].get("videocodecid").and_then(Value::as_number),
            Some(7.0)
        );
    }

    #[test]
    fn hostile_input() {
        assert!(
            decode_all(&[0x02, 0xff, 0xff, b'a']).is_err(),
            "string longer than the buffer"
        );
        assert!(
            decode_all(&[0x0A, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "huge array"
        );
        assert!(decode_all(&[0x11]).is_err(), "AMF3 switch not supported");
        assert!(decode_all(&[0x03; 200]).is_err(), "deep nesting");
        assert!(decode_all(&[0x02, 0, 2, 0xff, 0xfe]).is_err(), "not UTF-8");
        assert!(
            decode_all(&[0x03, 0, 1, b'k']).is_err(),
            "object without end"
        );
    }
}
