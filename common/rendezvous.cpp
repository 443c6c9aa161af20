#include "common/rendezvous.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "common/error.h"

namespace vit {
namespace {

constexpr uint32_t kMagic = 0x56495452;  // "VITR": a vit.cu rank, not some other client

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() { if (fd >= 0) close(fd); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Reads or writes exactly n bytes before the deadline; false on EOF, error or timeout.
bool io_all(int fd, void* buf, size_t n, double deadline, bool writing) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    pollfd pf{fd, (short)(writing ? POLLOUT : POLLIN), 0};
    int ms = (int)std::max(0.0, (deadline - now_s()) * 1000);
    if (poll(&pf, 1, ms) <= 0) return false;
    ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k <= 0) {
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      return false;
    }
    p += k;
    n -= (size_t)k;
  }
  return true;
}

struct Hello {  // rank -> rank 0
  uint32_t magic, rank, world;
};
struct Reply {  // rank 0 -> rank
  uint32_t magic, world;
  RendezvousId id;
};

sockaddr_in resolve(const std::string& addr, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(addr.c_str(), nullptr, &hints, &res) != 0 || !res)
    throw Error("rendezvous: cannot resolve MASTER_ADDR '" + addr + "'");
  sockaddr_in sa = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  freeaddrinfo(res);
  sa.sin_port = htons((uint16_t)port);
  return sa;
}

std::string where(const RendezvousConfig& c) { return c.addr + ":" + std::to_string(c.port); }

RendezvousId serve(const RendezvousConfig& c, const RendezvousId& id) {
  const double deadline = now_s() + c.timeout_s;
  Fd ls(socket(AF_INET, SOCK_STREAM, 0));
  if (ls.fd < 0) throw Error(std::string("rendezvous: socket: ") + strerror(errno));
  int one = 1;
  setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = resolve(c.addr, c.port);
  sa.sin_addr.s_addr = htonl(INADDR_ANY);  // MASTER_ADDR names this host for the others
  if (bind(ls.fd, (sockaddr*)&sa, sizeof sa) != 0)
    throw Error("rendezvous: rank 0 cannot listen on port " + std::to_string(c.port) + ": " +
                strerror(errno) + " (set MASTER_PORT to a free port)");
  listen(ls.fd, 64);
  std::vector<int> clients(c.world, -1);
  int joined = 1;
  auto cleanup = [&] { for (int fd : clients) if (fd >= 0) close(fd); };
  while (joined < c.world) {
    pollfd pf{ls.fd, POLLIN, 0};
    int ms = (int)std::max(0.0, (deadline - now_s()) * 1000);
    if (poll(&pf, 1, ms) <= 0) {
      std::string missing;
      for (int r = 1; r < c.world; ++r)
        if (clients[r] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      cleanup();
      throw Error("rendezvous: rank" + std::string(c.world - joined > 1 ? "s " : " ") + missing +
                  " of " + std::to_string(c.world) + " did not join within " +
                  std::to_string((int)c.timeout_s) + " s (rank 0 listening on port " +
                  std::to_string(c.port) + ")");
    }
    int fd = accept(ls.fd, nullptr, nullptr);
    if (fd < 0) continue;
    Hello h{};
    if (!io_all(fd, &h, sizeof h, std::min(deadline, now_s() + 5), false) || h.magic != kMagic) {
      close(fd);  // not one of ours (a port scanner, a stale client): ignore it
      continue;
    }
    if ((int)h.world != c.world) {
      close(fd);
      cleanup();
      throw Error("rendezvous: rank " + std::to_string(h.rank) + " says WORLD_SIZE=" +
                  std::to_string(h.world) + ", rank 0 has " + std::to_string(c.world));
    }
    if (h.rank < 1 || (int)h.rank >= c.world || clients[h.rank] >= 0) {
      close(fd);
      cleanup();
      throw Error("rendezvous: two processes claim rank " + std::to_string(h.rank) +
                  " (or it is out of range): check RANK / WORLD_SIZE");
    }
    clients[h.rank] = fd;
    ++joined;
  }
  Reply rep{kMagic, (uint32_t)c.world, id};
  for (int r = 1; r < c.world; ++r)
    if (!io_all(clients[r], &rep, sizeof rep, deadline, true)) {
      cleanup();
      throw Error("rendezvous: lost the connection to rank " + std::to_string(r));
    }
  cleanup();
  return id;
}

RendezvousId join(const RendezvousConfig& c) {
  const double deadline = now_s() + c.timeout_s;
  sockaddr_in sa = resolve(c.addr, c.port);
  for (;;) {
    Fd s(socket(AF_INET, SOCK_STREAM, 0));
    if (s.fd < 0) throw Error(std::string("rendezvous: socket: ") + strerror(errno));
    if (connect(s.fd, (sockaddr*)&sa, sizeof sa) == 0) {
      int one = 1;
      setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Hello h{kMagic, (uint32_t)c.rank, (uint32_t)c.world};
      Reply rep{};
      if (!io_all(s.fd, &h, sizeof h, deadline, true) ||
          !io_all(s.fd, &rep, sizeof rep, deadline, false) || rep.magic != kMagic)
        throw Error("rendezvous: rank " + std::to_string(c.rank) + " connected to " + where(c) +
                    " but got no answer from rank 0 within " + std::to_string((int)c.timeout_s) +
                    " s (another rank 0 failed, or a rank is missing)");
      return rep.id;
    }
    if (now_s() >= deadline)
      throw Error("rendezvous: rank " + std::to_string(c.rank) + " could not reach rank 0 at " +
                  where(c) + " within " + std::to_string((int)c.timeout_s) + " s (" +
                  strerror(errno) + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

RendezvousId file_exchange(const RendezvousConfig& c, const RendezvousId& mine) {
  const double deadline = now_s() + c.timeout_s;
  if (c.rank == 0) {
    const std::string tmp = c.file + ".tmp" + std::to_string(getpid());
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      uint32_t hdr[2] = {kMagic, (uint32_t)c.world};
      f.write((const char*)hdr, sizeof hdr);
      f.write(mine.data(), (std::streamsize)mine.size());
      if (!f) throw Error("rendezvous: cannot write '" + tmp + "'");
    }
    if (rename(tmp.c_str(), c.file.c_str()) != 0)  // atomic: readers never see half a file
      throw Error("rendezvous: cannot write '" + c.file + "': " + strerror(errno));
    return mine;
  }
  for (;;) {
    std::ifstream f(c.file, std::ios::binary);
    uint32_t hdr[2] = {0, 0};
    RendezvousId id{};
    if (f && f.read((char*)hdr, sizeof hdr) && f.read(id.data(), (std::streamsize)id.size())) {
      if (hdr[0] != kMagic) throw Error("rendezvous: '" + c.file + "' is not a vit.cu rendezvous file");
      if ((int)hdr[1] != c.world)
        throw Error("rendezvous: '" + c.file + "' is for WORLD_SIZE=" + std::to_string(hdr[1]) +
                    ", this rank has " + std::to_string(c.world) + " (a stale file? use a new path per run)");
      return id;
    }
    if (now_s() >= deadline)
      throw Error("rendezvous: rank " + std::to_string(c.rank) + " found no '" + c.file +
                  "' from rank 0 within " + std::to_string((int)c.timeout_s) + " s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

RendezvousId rendezvous(const RendezvousConfig& c, const RendezvousId& mine) {
  if (c.world < 1 || c.rank < 0 || c.rank >= c.world)
    throw Error("rendezvous: RANK " + std::to_string(c.rank) + " is not in 0.." +
                std::to_string(c.world - 1) + " (WORLD_SIZE " + std::to_string(c.world) + ")");
  if (c.world == 1) return mine;
  if (!c.file.empty()) return file_exchange(c, mine);
  return c.rank == 0 ? serve(c, mine) : join(c);
}

int free_local_port() {
  Fd s(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  socklen_t len = sizeof sa;
  if (s.fd < 0 || bind(s.fd, (sockaddr*)&sa, sizeof sa) != 0 ||
      getsockname(s.fd, (sockaddr*)&sa, &len) != 0)
    throw Error(std::string("cannot find a free local port: ") + strerror(errno));
  return ntohs(sa.sin_port);
}

}  // namespace vit
