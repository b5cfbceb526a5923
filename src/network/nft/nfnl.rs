//! The nf_tables wire format: netlink messages and attributes built and read by hand, a
//! blocking NETLINK_NETFILTER socket, batches with their acknowledgements, and dumps.
//! Constants are those of `<linux/netlink.h>`, `<linux/netfilter/nfnetlink.h>` and
//! `<linux/netfilter/nf_tables.h>`.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

/// `NFPROTO_UNSPEC` and `NFPROTO_IPV4` (also the `AF_*` numbers).
pub const FAMILY_ANY: u8 = 0;
pub const FAMILY_IP: u8 = 2;

/// `nf_tables_msg_types`.
pub const NEWTABLE: u8 = 0;
pub const DELTABLE: u8 = 2;
pub const NEWCHAIN: u8 = 3;
pub const GETCHAIN: u8 = 4;
pub const NEWRULE: u8 = 6;
pub const GETRULE: u8 = 7;
pub const DELRULE: u8 = 8;
const NEWGEN: u8 = 15;
const GETGEN: u8 = 16;

/// `nlmsghdr` flags.
pub const F_REQUEST: u16 = 0x1;
const F_ACK: u16 = 0x4;
const F_DUMP: u16 = 0x300;
pub const F_CREATE: u16 = 0x400;
pub const F_APPEND: u16 = 0x800;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
const SUBSYS_NFTABLES: u16 = 10;
const BATCH_GENID: u16 = 1;
const GEN_ID: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HEADER_LEN: usize = 16 + 4; // nlmsghdr + nfgenmsg

/// A message of a batch that the kernel refused, and why.
#[derive(Debug)]
pub struct Refusal {
    /// What the refused message was for (`None`: the batch as a whole).
    pub what: Option<String>,
    /// The kernel's errno.
    pub errno: i32,
}

/// Appends netlink attributes (type, length, value, padded to 4 bytes) to a message.
pub struct Attrs<'a>(&'a mut Vec<u8>);

impl Attrs<'_> {
    /// An attribute with raw bytes.
    pub fn bytes(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
        self
    }

    /// A big-endian u32, as nf_tables wants every number.
    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A big-endian u64 (rule handles).
    pub fn u64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(0);
        self.close(start, kind)
    }

    /// A nested attribute whose contents `fill` writes.
    pub fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs<'_>)) -> &mut Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        fill(&mut Attrs(self.0));
        self.close(start, kind | NLA_F_NESTED)
    }

    fn close(&mut self, start: usize, kind: u16) -> &mut Self {
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

/// Appends one message (`nlmsghdr` + `nfgenmsg` + attributes) to `buf`.
fn message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    fill: impl FnOnce(&mut Attrs<'_>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // length, set below
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
    buf.extend_from_slice(&[family, 0]); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    fill(&mut Attrs(buf));
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

const fn nft_type(msg: u8) -> u16 {
    (SUBSYS_NFTABLES << 8) | msg as u16
}

/// One change for the kernel to apply atomically: `BATCH_BEGIN`, messages, `BATCH_END`.
pub struct Batch {
    buf: Vec<u8>,
    begin: u32,
    whats: Vec<String>,
}

impl Batch {
    /// A batch that the kernel applies only while the ruleset is still at generation
    /// `genid` (else it refuses the whole batch with `ERESTART`).
    pub fn new(genid: u32) -> Batch {
        let mut buf = Vec::with_capacity(4096);
        message(
            &mut buf,
            BATCH_BEGIN,
            F_REQUEST,
            0,
            0,
            SUBSYS_NFTABLES,
            |a| {
                a.u32(BATCH_GENID, genid);
            },
        );
        Batch {
            buf,
            begin: 0,
            whats: Vec::new(),
        }
    }

    /// Adds a message; `what` says what it does, for errors ("add rule to chain forward").
    pub fn push(&mut self, msg: u8, flags: u16, what: String, fill: impl FnOnce(&mut Attrs<'_>)) {
        self.whats.push(what);
        let seq = self.begin + self.whats.len() as u32;
        message(&mut self.buf, nft_type(msg), flags, seq, FAMILY_IP, 0, fill);
    }

    /// Whether the batch has no message.
    pub fn is_empty(&self) -> bool {
        self.whats.is_empty()
    }
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
pub struct Conn {
    sock: Socket,
    seq: u32,
}

impl Conn {
    pub fn open() -> io::Result<Conn> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        // Errors carry only the refused message's header, not the whole message.
        sock.set_cap_ack(true)?;
        // The kernel answers within its sendmsg; a bound on waiting only guards a bug.
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(10)),
        )?;
        Ok(Conn { sock, seq: 1 })
    }

    fn next_seq(&mut self, count: u32) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(count);
        seq
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        let sent = self.sock.send(buf, 0)?;
        if sent != buf.len() {
            return Err(io::Error::other("netlink message sent in part"));
        }
        Ok(())
    }

    /// Reads one datagram and hands each of its messages to `each` until it says stop.
    fn receive(&self, mut each: impl FnMut(Reply<'_>) -> Flow) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            let len = self.sock.recv(&mut buf, libc::MSG_TRUNC)?;
            if len > buf.len() {
                return Err(io::Error::other("netlink reply larger than 64 KiB"));
            }
            for reply in Replies(&buf) {
                if let Flow::Stop = each(reply) {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a batch and waits for its outcome: `Ok(Ok(()))` when the kernel applied all
    /// of it, `Ok(Err(refusal))` with the first refused message when it applied none.
    pub fn commit(&mut self, mut batch: Batch) -> io::Result<Result<(), Refusal>> {
        let count = batch.whats.len() as u32;
        if count == 0 {
            return Ok(Ok(()));
        }
        let begin = self.next_seq(count + 2);
        // Renumber from `begin`; ask for an acknowledgement of the last message only:
        // the kernel reports refusals of the others anyway, before it.
        let mut offset = 0;
        let mut index = 0;
        while offset + HEADER_LEN <= batch.buf.len() {
            let len = u32_at(&batch.buf, offset) as usize;
            if len == 0 {
                break;
            }
            let seq = begin + index;
            batch.buf[offset + 8..offset + 12].copy_from_slice(&seq.to_ne_bytes());
            if index == count {
                let flags = u16::from_ne_bytes([batch.buf[offset + 6], batch.buf[offset + 7]]);
                batch.buf[offset + 6..offset + 8].copy_from_slice(&(flags | F_ACK).to_ne_bytes());
            }
            offset += len;
            index += 1;
        }
        message(
            &mut batch.buf,
            BATCH_END,
            F_REQUEST,
            begin + count + 1,
            0,
            SUBSYS_NFTABLES,
            |_| {},
        );
        self.send(&batch.buf)?;

        let last = begin + count;
        let mut refusal = None;
        self.receive(|reply| {
            if reply.kind != NLMSG_ERROR || reply.seq < begin || reply.seq > last + 1 {
                return Flow::More;
            }
            let errno = reply.error();
            let inner = reply.seq > begin && reply.seq <= last;
            if errno != 0 && refusal.is_none() {
                let what = inner.then(|| batch.whats[(reply.seq - begin - 1) as usize].clone());
                refusal = Some(Refusal { what, errno });
            }
            // The last message's answer comes after all others; an error about the batch
            // itself (its begin or end) is the only answer.
            if reply.seq == last || (!inner && errno != 0) {
                Flow::Stop
            } else {
                Flow::More
            }
        })?;
        Ok(refusal.map_or(Ok(()), Err))
    }

    /// The ruleset's generation now.
    pub fn generation(&mut self) -> io::Result<u32> {
        let seq = self.next_seq(1);
        let mut buf = Vec::with_capacity(32);
        message(
            &mut buf,
            nft_type(GETGEN),
            F_REQUEST,
            seq,
            FAMILY_ANY,
            0,
            |_| {},
        );
        self.send(&buf)?;
        let mut result = Err(io::Error::other("no generation in the kernel's reply"));
        self.receive(|reply| {
            if reply.seq != seq {
                return Flow::More;
            }
            if reply.kind == NLMSG_ERROR {
                result = Err(io::Error::from_raw_os_error(reply.error()));
            } else if reply.kind == nft_type(NEWGEN)
                && let Some(id) = reply.attrs().find(|(kind, _)| *kind == GEN_ID)
                && id.1.len() == 4
            {
                result = Ok(u32::from_be_bytes([id.1[0], id.1[1], id.1[2], id.1[3]]));
            }
            Flow::Stop
        })?;
        result
    }

    /// Dumps objects of kind `msg` (`GETRULE`, `GETCHAIN`) of `family`, narrowed by the
    /// attributes `fill` writes; calls `each` with each object's family and attributes.
    pub fn dump(
        &mut self,
        msg: u8,
        family: u8,
        fill: impl FnOnce(&mut Attrs<'_>),
        mut each: impl FnMut(u8, AttrIter<'_>),
    ) -> io::Result<()> {
        let seq = self.next_seq(1);
        let mut buf = Vec::with_capacity(64);
        message(
            &mut buf,
            nft_type(msg),
            F_REQUEST | F_DUMP,
            seq,
            family,
            0,
            fill,
        );
        self.send(&buf)?;
        let mut result = Ok(());
        self.receive(|reply| {
            if reply.seq != seq {
                return Flow::More;
            }
            match reply.kind {
                NLMSG_ERROR | NLMSG_DONE => {
                    let errno = reply.error();
                    if errno != 0 {
                        result = Err(io::Error::from_raw_os_error(errno));
                    }
                    Flow::Stop
                }
                _ => {
                    if let Some(family) = reply.payload.first() {
                        each(*family, reply.attrs());
                    }
                    Flow::More
                }
            }
        })?;
        result
    }
}

enum Flow {
    More,
    Stop,
}

/// One message of a reply.
struct Reply<'a> {
    kind: u16,
    seq: u32,
    /// After the `nlmsghdr`.
    payload: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The errno of an `NLMSG_ERROR` (0: an acknowledgement) or `NLMSG_DONE`, positive.
    fn error(&self) -> i32 {
        match self.payload.get(..4) {
            Some(b) => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).saturating_neg(),
            None => libc::EBADMSG,
        }
    }

    /// The attributes after the `nfgenmsg`.
    fn attrs(&self) -> AttrIter<'a> {
        AttrIter(self.payload.get(4..).unwrap_or_default())
    }
}

fn u32_at(buf: &[u8], offset: usize) -> u32 {
    match buf.get(offset..offset + 4) {
        Some(b) => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// The messages of one datagram; ends at the first malformed one.
struct Replies<'a>(&'a [u8]);

impl<'a> Iterator for Replies<'a> {
    type Item = Reply<'a>;

    fn next(&mut self) -> Option<Reply<'a>> {
        let len = u32_at(self.0, 0) as usize;
        if len < 16 || len > self.0.len() {
            return None;
        }
        let reply = Reply {
            kind: u16::from_ne_bytes([self.0[4], self.0[5]]),
            seq: u32_at(self.0, 8),
            payload: &self.0[16..len],
        };
        self.0 = self.0.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(reply)
    }
}

/// The attributes of a message or of a nested attribute, as (type, value); ends at the
/// first malformed one.
pub struct AttrIter<'a>(pub &'a [u8]);

impl<'a> Iterator for AttrIter<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let head = self.0.get(..4)?;
        let len = u16::from_ne_bytes([head[0], head[1]]) as usize;
        let kind = u16::from_ne_bytes([head[2], head[3]]) & NLA_TYPE_MASK;
        let value = self.0.get(4..len)?;
        self.0 = self.0.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, value))
    }
}

/// A big-endian u32 or u64 attribute's value.
pub fn be_number(value: &[u8]) -> Option<u64> {
    match value.len() {
        4 => Some(u32::from_be_bytes(value.try_into().ok()?).into()),
        8 => Some(u64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

/// A NUL-terminated string attribute's value.
pub fn string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut buf = Vec::new();
        Attrs(&mut buf).str(1, "mm").u32(2, 7).nest(3, |a| {
            a.u64(4, 9);
        });
        assert_eq!(buf.len() % 4, 0);
        let attrs: Vec<_> = AttrIter(&buf).collect();
        assert_eq!(attrs.len(), 3);
        assert_eq!((attrs[0].0, string(attrs[0].1)), (1, "mm".to_owned()));
        assert_eq!(be_number(attrs[1].1), Some(7));
        let inner: Vec<_> = AttrIter(attrs[2].1).collect();
        assert_eq!((inner[0].0, be_number(inner[0].1)), (4, Some(9)));
    }

    #[test]
    fn malformed_attributes_end_the_walk() {
        assert_eq!(AttrIter(&[8, 0, 1, 0, 1]).count(), 0);
        assert_eq!(AttrIter(&[2, 0, 1, 0]).count(), 0);
        assert_eq!(Replies(&[40, 0, 0, 0, 2, 0]).count(), 0);
    }
}
