//! [`TcpRing`]: ranks in separate processes or hosts, connected in a ring over std TCP.
//!
//! Rank `r` accepts one connection from rank `r - 1` and opens one to rank `r + 1` (mod N). An
//! exchange passes every rank's buffer around the ring in `N - 1` steps; at each step a rank
//! writes to the next rank and reads from the previous one (small frames are written first;
//! large ones by a scoped thread while the caller reads, so they cannot deadlock on full socket
//! buffers). Frames are length-prefixed:
//! `op: u8, 3 zero bytes, origin rank: u32, length: u64` (little endian) then the payload.
//! Every read and write has a timeout derived from the operation's deadline; on any error the
//! sockets are shut down, so the failure reaches every rank of the ring quickly.

use super::{Collective, CollectiveError, Op, DEFAULT_TIMEOUT};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First bytes of the handshake a rank sends to its successor.
const MAGIC: u32 = 0xB17E_7C01;
/// Payloads up to this size are written before reading (the kernel's socket buffers hold
/// them, so the write cannot wait on the peer); larger ones are written by a scoped thread
/// while the caller reads, so two ranks sending large frames to each other cannot deadlock.
const INLINE_WRITE: usize = 16 * 1024 - 16;
/// Largest payload accepted in one frame.
const MAX_FRAME: u64 = 1 << 32;

/// Where the ranks of a ring listen and how long to wait.
#[derive(Clone, Debug)]
pub struct TcpRingConfig {
    /// This rank.
    pub rank: usize,
    /// Every rank's listening address, in rank order.
    pub addresses: Vec<SocketAddr>,
    /// Deadline of one collective operation.
    pub timeout: Duration,
    /// How long to keep trying to connect the ring.
    pub connect_timeout: Duration,
}

impl TcpRingConfig {
    /// Default deadlines (30 s per operation and for connecting).
    pub fn new(rank: usize, addresses: Vec<SocketAddr>) -> Self {
        Self {
            rank,
            addresses,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_TIMEOUT,
        }
    }
}

struct Links {
    next: TcpStream,
    prev: TcpStream,
}

/// One rank of a TCP ring.
pub struct TcpRing {
    rank: usize,
    world: usize,
    timeout: Duration,
    /// `None` for a group of one, or once an operation failed.
    links: Mutex<Option<Links>>,
}

impl TcpRing {
    /// Binds `addresses[rank]` and connects the ring.
    pub fn connect(config: TcpRingConfig) -> Result<Self, CollectiveError> {
        let addr = *config.addresses.get(config.rank).ok_or_else(|| {
            CollectiveError::Config(format!(
                "rank {} has no address among {}",
                config.rank,
                config.addresses.len()
            ))
        })?;
        let listener = TcpListener::bind(addr).map_err(|e| {
            CollectiveError::Config(format!("rank {} cannot listen on {addr}: {e}", config.rank))
        })?;
        Self::with_listener(listener, config)
    }

    /// Connects the ring using an already bound listener (so tests can use ephemeral ports).
    pub fn with_listener(
        listener: TcpListener,
        config: TcpRingConfig,
    ) -> Result<Self, CollectiveError> {
        let (rank, world) = (config.rank, config.addresses.len());
        if rank >= world {
            return Err(CollectiveError::Config(format!(
                "rank {rank} is outside a ring of {world}"
            )));
        }
        if world == 1 {
            return Ok(Self {
                rank,
                world,
                timeout: config.timeout,
                links: Mutex::new(None),
            });
        }
        let deadline = Instant::now() + config.connect_timeout;
        let next_rank = (rank + 1) % world;
        let prev_rank = (rank + world - 1) % world;
        let next_addr = config.addresses[next_rank];
        let (next, prev) = std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_prev(&listener, rank, world, prev_rank, deadline));
            let next = connect_next(next_addr, rank, world, next_rank, deadline);
            let prev = acceptor.join().unwrap_or_else(|_| {
                Err(CollectiveError::Config(
                    "the accepting thread panicked".into(),
                ))
            });
            (next, prev)
        });
        let (next, prev) = (next?, prev?);
        for stream in [&next, &prev] {
            stream
                .set_nodelay(true)
                .map_err(|e| io(rank, rank, "connect", e))?;
        }
        Ok(Self {
            rank,
            world,
            timeout: config.timeout,
            links: Mutex::new(Some(Links { next, prev })),
        })
    }

    fn run(
        &self,
        links: &mut Links,
        op: Op,
        data: Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let (rank, world) = (self.rank, self.world);
        let deadline = Instant::now() + self.timeout;
        let next_rank = (rank + 1) % world;
        let prev_rank = (rank + world - 1) % world;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; world];
        out[rank] = Some(data);
        let mut carry = rank;
        for step in 0..world - 1 {
            let origin = (rank + world - step - 1) % world;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timeout_error(prev_rank, op));
            }
            let timeout = Some(remaining);
            let set = |s: &TcpStream, peer| {
                s.set_write_timeout(timeout)
                    .and_then(|_| s.set_read_timeout(timeout))
                    .map_err(|e| io(rank, peer, op.name(), e))
            };
            set(&links.next, next_rank)?;
            set(&links.prev, prev_rank)?;
            let payload = out[carry].as_deref().unwrap_or_default();
            let Links { next, prev } = links;
            let (written, received) = if payload.len() <= INLINE_WRITE {
                // Fits in the socket buffers: writing first cannot block on the peer.
                let written = write_frame(next, op, carry, payload);
                (written, read_frame(prev))
            } else {
                std::thread::scope(|s| {
                    let writer = s.spawn(move || write_frame(next, op, carry, payload));
                    let received = read_frame(prev);
                    let written = writer
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")));
                    (written, received)
                })
            };
            written.map_err(|e| self.map_io(next_rank, op, e))?;
            let (got_op, got_origin, bytes) =
                received.map_err(|e| self.map_io(prev_rank, op, e))?;
            if got_op != op as u8 || got_origin != origin {
                return Err(CollectiveError::Protocol {
                    rank,
                    peer: prev_rank,
                    op: op.name(),
                    got: format!("a frame with op tag {got_op} from origin rank {got_origin} (expected origin {origin})"),
                });
            }
            out[origin] = Some(bytes);
            carry = origin;
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn timeout_error(&self, peer: usize, op: Op) -> CollectiveError {
        CollectiveError::Timeout {
            rank: self.rank,
            peer,
            op: op.name(),
            timeout: self.timeout,
        }
    }

    fn map_io(&self, peer: usize, op: Op, e: std::io::Error) -> CollectiveError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timeout_error(peer, op),
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => CollectiveError::Disconnected {
                rank: self.rank,
                peer,
                op: op.name(),
            },
            _ => io(self.rank, peer, op.name(), e),
        }
    }
}

impl Collective for TcpRing {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn exchange(&self, op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError> {
        if self.world == 1 {
            return Ok(vec![data]);
        }
        let mut guard = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let Some(links) = guard.as_mut() else {
            return Err(CollectiveError::Broken {
                rank: self.rank,
                op: op.name(),
            });
        };
        let result = self.run(links, op, data);
        if result.is_err() {
            // Closing both sockets makes the neighbours fail at once instead of at their deadline.
            let _ = links.next.shutdown(Shutdown::Both);
            let _ = links.prev.shutdown(Shutdown::Both);
            *guard = None;
        }
        result
    }
}

fn io(rank: usize, peer: usize, op: &'static str, source: std::io::Error) -> CollectiveError {
    CollectiveError::Io {
        rank,
        peer,
        op,
        source,
    }
}

fn write_frame(
    stream: &mut TcpStream,
    op: Op,
    origin: usize,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut header = [0u8; 16];
    header[0] = op as u8;
    header[4..8].copy_from_slice(&(origin as u32).to_le_bytes());
    header[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    stream.write_all(&header)?;
    stream.write_all(payload)?;
    stream.flush()
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, usize, Vec<u8>)> {
    let mut header = [0u8; 16];
    stream.read_exact(&mut header)?;
    let origin = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[8..16]);
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME || Op::from_tag(header[0]).is_none() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("bad frame header (op tag {}, length {len})", header[0]),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    Ok((header[0], origin, payload))
}

/// Opens the connection to the next rank, retrying until `deadline` (it may not listen yet),
/// and introduces this rank.
fn connect_next(
    addr: SocketAddr,
    rank: usize,
    world: usize,
    next_rank: usize,
    deadline: Instant,
) -> Result<TcpStream, CollectiveError> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CollectiveError::Config(format!(
                "rank {rank} could not connect to rank {next_rank} at {addr} before the deadline"
            )));
        }
        match TcpStream::connect_timeout(&addr, remaining.min(Duration::from_secs(1))) {
            Ok(mut stream) => {
                let mut hello = [0u8; 12];
                hello[0..4].copy_from_slice(&MAGIC.to_le_bytes());
                hello[4..8].copy_from_slice(&(rank as u32).to_le_bytes());
                hello[8..12].copy_from_slice(&(world as u32).to_le_bytes());
                stream
                    .set_write_timeout(Some(remaining))
                    .and_then(|_| stream.write_all(&hello))
                    .map_err(|e| io(rank, next_rank, "connect", e))?;
                return Ok(stream);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Accepts the connection of the previous rank before `deadline` and checks its handshake.
fn accept_prev(
    listener: &TcpListener,
    rank: usize,
    world: usize,
    prev_rank: usize,
    deadline: Instant,
) -> Result<TcpStream, CollectiveError> {
    let err = |e| io(rank, prev_rank, "accept", e);
    listener.set_nonblocking(true).map_err(err)?;
    loop {
        match listener.accept() {
            Ok((mut stream, from)) => {
                stream.set_nonblocking(false).map_err(err)?;
                let remaining = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let mut hello = [0u8; 12];
                stream
                    .set_read_timeout(Some(remaining))
                    .and_then(|_| stream.read_exact(&mut hello))
                    .map_err(err)?;
                let word = |i: usize| {
                    u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]])
                };
                if word(0) != MAGIC || word(4) as usize != prev_rank || word(8) as usize != world {
                    return Err(CollectiveError::Config(format!(
                        "rank {rank}: unexpected ring handshake from {from} (rank {}, world {}); expected rank {prev_rank} of {world}",
                        word(4),
                        word(8)
                    )));
                }
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(CollectiveError::Config(format!(
                        "rank {rank}: rank {prev_rank} did not connect before the deadline"
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err(e)),
        }
    }
}
