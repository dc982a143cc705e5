//! `wsock32.dll` and `ws2_32.dll` stand-ins: unmodified WinSock programs get VMMC sockets for
//! the addresses the routes send there, and the system's sockets for everything else.
//!
//! The seed's NT port began with a wrapper around wsock32.dll; this is that wrapper, for both
//! WinSock DLLs. The logic lives in `vmmc_winsock.dll`; `ws2_32.dll` and `wsock32.dll` are
//! pure forwarders into it with the system DLLs' export names and ordinals (`build.sh` makes
//! them from `exports/*.txt`), so a program that imports either (by name or by ordinal) lands
//! here, and both share one socket table.
//!
//! # How a socket becomes a VMMC socket
//!
//! A program's `socket()` is always the system's: that socket stays the program's handle for
//! its whole life, so `SOCKET` values never collide with anything the system hands out. When
//! the program connects a stream socket to, or binds one at, an address the routes send to
//! VMMC (see [`vmmc_sockets::routes`]: `VMMC_ROUTES` inline, `VMMC_ROUTES_FILE` a file), a
//! socket of [`vmmc_sockets::table`] takes over behind it and the system socket stays open and
//! unconnected as its placeholder. Calls on a routed socket go to the table; calls on any other
//! socket, and every call the wrapper does not implement, go to the system's ws2_32.dll,
//! loaded from the system directory by full path. A socket `accept`ed from a routed listener
//! gets a fresh placeholder of its own.
//!
//! A connect to a routed address where no VMMC listener answers falls back to the system's
//! TCP at the original address, unless the route is `strict`, in which case it fails with
//! `WSAECONNREFUSED`.
//!
//! # What a routed socket supports
//!
//! The WinSock 1.1 calls (`socket`, `bind`, `listen`, `accept`, `connect`, `send`, `recv`,
//! `sendto`/`recvfrom` as on any connected stream, `select` with `__WSAFDIsSet`, `ioctlsocket`
//! with `FIONBIO`, `FIONREAD` and `SIOCATMARK`, `getsockopt`/`setsockopt` for buffer sizes,
//! timeouts and `TCP_NODELAY`, `getsockname`, `getpeername`, `shutdown`, `closesocket`,
//! `WSAGetLastError`), and `WSASend`/`WSARecv` with several buffers (scatter/gather), `WSAPoll`,
//! `WSAIoctl` (the same requests plus the pointer-based ones in [`ioctl`]), `WSAAccept` and
//! `WSAConnect` without their extras. `select` and `WSAPoll` take routed and system sockets in
//! one set.
//!
//! Not supported on routed sockets, each failing with `WSAEOPNOTSUPP` rather than doing
//! something else: overlapped I/O (an `OVERLAPPED` or a completion routine),
//! `WSAEventSelect`/`WSAAsyncSelect`, extension functions (`AcceptEx`, `ConnectEx`), and
//! `WSADuplicateSocket`: sharing a connection with another process needs the Windows shared
//! memory backend, which does not exist yet.
//!
//! # Installing
//!
//! Under Wine, the three DLLs go beside the program, which runs with
//! `WINEDLLOVERRIDES=wsock32,ws2_32=n,b` (and `VMMC_ROUTES`). On Windows itself, a program that
//! imports wsock32.dll takes an application-local wsock32.dll (it is not a KnownDLL); ws2_32.dll
//! is a KnownDLL on current Windows, so a program that imports it gets the system's whatever
//! lies beside it, and needs its import redirected (a launcher that loads the wrapper first,
//! as Detours' withdll does, or an edited import table).

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(windows)]
mod calls;
pub mod config;
#[cfg(windows)]
mod ffi;
pub mod flags;
pub mod ioctl;
#[cfg(windows)]
mod map;
