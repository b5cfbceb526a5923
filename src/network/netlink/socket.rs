//! The wire side of [`super::Netlink`]: one `NETLINK_ROUTE` socket, and the loop that sends a
//! request and reads its replies until the kernel's acknowledgement, error or `NLMSG_DONE`.

use std::fmt;
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, parse_string,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{NetlinkError, Operation};

/// Room for one datagram: the kernel fills dump datagrams up to 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// How many times a dump the kernel marks as interrupted (`NLM_F_DUMP_INTR`) is tried.
const DUMP_ATTEMPTS: usize = 3;
/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The size of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// A connected `NETLINK_ROUTE` socket, the last sequence number used, a receive buffer.
pub(super) struct Channel {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

/// A request's failure before the caller names the operation.
pub(super) struct Failure {
    source: io::Error,
    message: Option<String>,
}

impl Failure {
    pub(super) fn during(self, operation: Operation) -> NetlinkError {
        NetlinkError::Request {
            operation,
            source: self.source,
            message: self.message,
        }
    }

    pub(super) fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    fn decode(what: impl fmt::Display) -> Self {
        Self::from(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad netlink reply: {what}"),
        ))
    }
}

impl From<io::Error> for Failure {
    fn from(source: io::Error) -> Self {
        Self {
            source,
            message: None,
        }
    }
}

/// The replies to one request, and whether the kernel said a dump was interrupted.
struct Replies {
    messages: Vec<RouteNetlinkMessage>,
    interrupted: bool,
}

impl Channel {
    /// A socket in the calling thread's network namespace, connected to the kernel.
    pub(super) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Both are optional: without them errors come back longer and without the kernel's
        // text.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// A dump, done again (up to [`DUMP_ATTEMPTS`] times) while the kernel says it was
    /// interrupted by a change.
    pub(super) fn dump(
        &mut self,
        request: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let replies = self.exchange(request.clone(), NLM_F_DUMP)?;
            if !replies.interrupted {
                return Ok(replies.messages);
            }
            if attempts == DUMP_ATTEMPTS {
                return Err(io::Error::from_raw_os_error(libc::EINTR).into());
            }
        }
    }

    /// A request acknowledged by the kernel: its replies, if any.
    pub(super) fn request(
        &mut self,
        request: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        Ok(self.exchange(request, flags | NLM_F_ACK)?.messages)
    }

    /// Sends `request` and reads the replies with its sequence number until the kernel's
    /// acknowledgement, error or `NLMSG_DONE`. Replies to earlier requests (left over after an
    /// error in the middle of a dump) are skipped.
    fn exchange(&mut self, request: RouteNetlinkMessage, flags: u16) -> Result<Replies, Failure> {
        let sequence = self.send(request, flags)?;
        let mut replies = Replies {
            messages: Vec::new(),
            interrupted: false,
        };
        loop {
            let size = self.receive()?;
            let mut offset = 0;
            while offset < size {
                let bytes = &self.buffer[offset..size];
                let frame = NetlinkBuffer::new_checked(bytes).map_err(Failure::decode)?;
                let length = frame.length() as usize;
                offset += length.next_multiple_of(4);
                if frame.sequence_number() != sequence {
                    continue;
                }
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..length])
                    .map_err(Failure::decode)?;
                let header = message.header;
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                        replies.messages.push(inner);
                    }
                    NetlinkPayload::Error(error) => match error.code {
                        None => return Ok(replies),
                        Some(code) => {
                            return Err(Failure {
                                source: io::Error::from_raw_os_error(-code.get()),
                                message: extended_ack(header.flags, &error.header),
                            });
                        }
                    },
                    NetlinkPayload::Done(done) => {
                        if done.code != 0 {
                            return Err(io::Error::from_raw_os_error(-done.code).into());
                        }
                        replies.interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                        return Ok(replies);
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::from_raw_os_error(libc::ENOBUFS).into());
                    }
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, request: RouteNetlinkMessage, flags: u16) -> Result<u32, Failure> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        let sent = self.socket.send(&bytes, 0)?;
        if sent != bytes.len() {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE).into());
        }
        Ok(self.sequence)
    }

    /// Reads one datagram into the buffer; its length.
    fn receive(&mut self) -> Result<usize, Failure> {
        loop {
            // MSG_TRUNC: the datagram's real length, to tell a truncated one.
            match self.socket.recv(&mut &mut self.buffer[..], libc::MSG_TRUNC) {
                Ok(size) if size > self.buffer.len() => {
                    return Err(io::Error::from_raw_os_error(libc::EMSGSIZE).into());
                }
                Ok(size) => return Ok(size),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The kernel's extended-ack text from an `NLMSG_ERROR`'s payload after the code: the
/// request's header (or, without `NLM_F_CAPPED`, the whole request), then attributes when
/// `NLM_F_ACK_TLVS` is set.
fn extended_ack(flags: u16, after_code: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        let length = after_code.get(..4)?;
        u32::from_ne_bytes(length.try_into().ok()?) as usize
    };
    let attributes = after_code.get(echoed.next_multiple_of(4)..)?;
    NlasIterator::new(attributes)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute of type `kind` holding `value`, padded to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let length = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        let mut bytes = [length.to_ne_bytes(), kind.to_ne_bytes()].concat();
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    /// An echoed request header saying `length`, followed by `rest` bytes of request.
    fn echoed(length: u32, rest: usize) -> Vec<u8> {
        let mut bytes = length.to_ne_bytes().to_vec();
        bytes.resize(HEADER_LEN + rest, 0);
        bytes
    }

    #[test]
    fn extended_ack_text_after_a_capped_header() {
        let mut payload = echoed(40, 0);
        payload.extend(nla(3, &7u32.to_ne_bytes()));
        payload.extend(nla(NLMSGERR_ATTR_MSG, b"mtu greater than device maximum\0"));
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        assert_eq!(
            extended_ack(flags, &payload).as_deref(),
            Some("mtu greater than device maximum")
        );
        assert_eq!(extended_ack(NLM_F_CAPPED, &payload), None, "no TLVs flag");
    }

    #[test]
    fn extended_ack_text_after_a_whole_request() {
        let mut payload = echoed(22, 6);
        payload.resize(24, 0);
        payload.extend(nla(NLMSGERR_ATTR_MSG, b"bad\0"));
        assert_eq!(
            extended_ack(NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("bad")
        );
        assert_eq!(extended_ack(NLM_F_ACK_TLVS, &payload[..10]), None, "short");
    }
}
