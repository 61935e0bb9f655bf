// Threads of the fused CPU step (included by fastgen.cpp): a team of persistent workers that run
// spans of steps ("jobs") in lock-step with the calling thread, a barrier that stays cheap when the
// machine is busy, and a controller that picks the thread layout by measuring it.
//
// A layout (R, C) splits the batch rows into R groups and each group's channels over C threads
// (R * C threads in all). Threads of one group meet at a barrier between dependent layers
// (~2 per residual block); groups never wait for each other within a job. (1, 1) is the plain
// single-threaded step. The controller times every layout that fits the team and the batch, then
// keeps the fastest, re-timing the others now and then (less often the slower they were), so a
// busy machine moves it to fewer threads and a quiet one back. Every layout computes the same
// bits, so switching is invisible in the results.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Wait until ready() holds: spin (a peer on another core answers within ~0.1-1 us), then yield the
// core (a descheduled peer needs the CPU time more than we need the latency), optionally block.
template <class F>
inline void spin_wait(F ready, double spin_s = 20e-6) {
  for (int i = 0; i < 256; ++i) {
    if (ready()) return;
    cpu_relax();
  }
  const double t0 = now_s();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return;
      cpu_relax();
    }
    if (now_s() - t0 > spin_s) break;
  }
  while (!ready()) std::this_thread::yield();
}

struct alignas(64) Slot {
  std::atomic<uint64_t> v{0};
};

// What the threads run together: a span of feed or generate steps (set by the caller before the
// job starts; read-only during it).
struct Job {
  int kind = 0;  // 0 feed, 1 generate
  int64_t t0 = 0, steps = 0;
  const int64_t* tokens = nullptr;  // feed: (B, steps) with row stride ld
  int64_t* out = nullptr;           // generate: (B, steps) with row stride ld
  int64_t ld = 0;
  float* logits_out = nullptr;  // feed: (B, logits_steps, V) or null
  int64_t logits_steps = 0, logits_t = 0;
  const float* uniforms = nullptr;  // generate: (B, steps) with row stride uld
  int64_t uld = 0;
  float temperature = 1.0f, top_p = 1.0f;
  int64_t top_k = 0;
  bool feed_last = true;
  int R = 1, C = 1;  // layout
};

struct Engine;
void run_thread_job(Engine& E, int tid);  // fastgen_model.h

struct Team {
  int T = 1;                    // threads, the caller included
  std::vector<std::thread> workers;
  std::unique_ptr<Slot[]> arrive;  // per thread: (job << 32) | barriers passed in this job
  std::unique_ptr<Slot[]> go;      // per worker: the job it should run next
  std::unique_ptr<Slot[]> done;    // per worker: the last job it finished
  // Held by pointer: a forked child drops its parent's (possibly held) ones for fresh ones.
  std::unique_ptr<std::mutex> m{new std::mutex};
  std::unique_ptr<std::condition_variable> cv{new std::condition_variable};
  std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> worker_failed{false};
  uint64_t job_id = 0;
  long pid = 0;     // the process that started the workers (a forked child must not wait on them)
  bool failed = false;  // workers could not be started: single-threaded from then on
  Job job;

  explicit Team(int threads) : T(std::max(1, threads)) {
    arrive.reset(new Slot[T]);
    go.reset(new Slot[T]);
    done.reset(new Slot[T]);
  }
  ~Team() { shutdown(); }

  static long current_pid() {
#if defined(__unix__) || defined(__APPLE__)
    return static_cast<long>(getpid());
#else
    return 0;
#endif
  }

  void shutdown() {
    if (workers.empty()) return;
    if (pid != current_pid()) {  // a forked child: the threads do not exist here
      for (auto& w : workers) w.detach();
      workers.clear();
      return;
    }
    stop.store(true);
    {
      std::lock_guard<std::mutex> lk(*m);
      cv->notify_all();
    }
    for (auto& w : workers) w.join();
    workers.clear();
    stop.store(false);
  }

  // Start the workers on first use; false if the system refuses threads.
  bool ensure(Engine& E) {
    if (T == 1 || failed) return T == 1 ? true : false;
    if (!workers.empty() && pid == current_pid()) return true;
    if (!workers.empty()) {  // inherited through fork(): the threads are gone, their locks may be held
      for (auto& w : workers) w.detach();
      workers.clear();
      m.release();  // leaked on purpose: destroying a mutex another (vanished) thread holds is undefined
      cv.release();
      m.reset(new std::mutex);
      cv.reset(new std::condition_variable);
      sleepers.store(0);
    }
    pid = current_pid();
    try {
      for (int i = 1; i < T; ++i) workers.emplace_back([this, &E, i] { worker(E, i); });
    } catch (...) {  // std::system_error: out of threads or memory for stacks
      shutdown();
      failed = true;
      return false;
    }
    return true;
  }

  void worker(Engine& E, int tid) {
    uint64_t seen = 0;  // job ids start at 1 (reading go[] here could miss the first job)
    for (;;) {
      uint64_t next = 0;
      auto ready = [&] {
        next = go[tid].v.load(std::memory_order_seq_cst);
        return next != seen || stop.load(std::memory_order_seq_cst);
      };
      // Between the jobs of one call there are microseconds: spin. Between calls, sleep.
      const double t0 = now_s();
      bool got = false;
      while (now_s() - t0 < 200e-6) {
        for (int i = 0; i < 64 && !(got = ready()); ++i) cpu_relax();
        if (got) break;
        std::this_thread::yield();
      }
      if (!got) {
        std::unique_lock<std::mutex> lk(*m);
        sleepers.fetch_add(1);
        cv->wait(lk, ready);
        sleepers.fetch_sub(1);
      }
      if (stop.load()) return;
      seen = next;
      try {
        run_thread_job(E, tid);
      } catch (...) {  // the step does not allocate; never let an exception end the process
        worker_failed.store(true);
      }
      done[tid].v.store(next, std::memory_order_release);
    }
  }

  // Run `job` on threads 0 .. R*C-1 (the caller is thread 0) and wait for all of them.
  void run(Engine& E) {
    const int n = job.R * job.C;
    ++job_id;
    for (int i = 0; i < n; ++i) arrive[i].v.store(job_id << 32, std::memory_order_relaxed);
    for (int i = 1; i < n; ++i) go[i].v.store(job_id, std::memory_order_seq_cst);
    if (n > 1 && sleepers.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(*m);
      cv->notify_all();
    }
    run_thread_job(E, 0);
    for (int i = 1; i < n; ++i) spin_wait([&] { return done[i].v.load(std::memory_order_acquire) == job_id; });
  }
};

// A barrier among threads [first, first + count) of the current job: each thread publishes how
// many barriers it has passed and waits for the others to reach the same count.
struct Barrier {
  Team* team = nullptr;
  int first = 0, count = 1, me = 0;
  uint64_t epoch = 0;
  void wait() {
    if (count == 1) return;
    SG_PROF(P_SYNC);
    ++epoch;
    team->arrive[me].v.store(epoch, std::memory_order_release);
    for (int j = first; j < first + count; ++j)
      if (j != me) spin_wait([&] { return team->arrive[j].v.load(std::memory_order_acquire) >= epoch; });
  }
};

// ---- the controller: which layout runs the next job --------------------------------------------
struct Layout {
  int R = 1, C = 1;
  double ns = 0.0;         // smoothed time per step
  int64_t measured = 0;    // number of measurements
  int64_t next_check = 0;  // job count at which to time it again
  int64_t steps = 0;       // steps run in this layout (statistics)
};

struct Controller {
  std::vector<Layout> layouts;
  int cur = 0, pinned = -1, best = -1;
  int64_t window = 64;  // steps per measurement (a whole number of pooling periods)
  int64_t period = 1;
  int64_t jobs = 0;
  double acc_s = 0.0;
  int64_t acc_steps = 0;

  void init(int threads, int64_t batch, int64_t max_units, int64_t period_) {
    layouts.clear();
    auto add = [&](int R, int C) {
      for (const Layout& l : layouts)
        if (l.R == R && l.C == C) return;
      Layout l;
      l.R = R;
      l.C = C;
      layouts.push_back(l);
    };
    add(1, 1);
    std::vector<int> counts;  // 2, 4, ... below the team size, and the team size
    for (int t = 2; t < threads; t *= 2) counts.push_back(t);
    if (threads > 1) counts.push_back(threads);
    for (int t : counts)
      for (int R = 1; R <= t; R *= 2)
        if (t % R == 0 && R <= batch && t / R <= max_units) add(R, t / R);
    period = std::max<int64_t>(1, period_);
    window = std::max<int64_t>(period, (64 + period - 1) / period * period);
    cur = 0;
    best = -1;
    jobs = 0;
    acc_s = 0.0;
    acc_steps = 0;
  }

  int find(int R, int C) const {
    for (size_t i = 0; i < layouts.size(); ++i)
      if (layouts[i].R == R && layouts[i].C == C) return static_cast<int>(i);
    return -1;
  }

  // A layout other than the best runs one period per job, so that a losing one is dropped early.
  bool trial() const { return best >= 0 && cur != best; }

  // Steps the next job may take (the current layout is kept until its window is measured).
  int64_t budget() const {
    if (pinned >= 0) return window;
    const int64_t left = window - acc_steps;
    return trial() ? std::min(left, period) : left;
  }
  int layout() const { return pinned >= 0 ? pinned : cur; }

  void record(int64_t steps, double seconds) {
    const int i = layout();
    layouts[i].steps += steps;
    if (pinned >= 0) return;
    acc_s += seconds;
    acc_steps += steps;
    // A trial ends when its window is measured, or as soon as it has taken longer than the best
    // layout would for a whole window (it cannot win: stop paying for it).
    const bool lost = trial() && acc_steps >= period && acc_s * 1e9 > layouts[best].ns * window;
    if (acc_steps < window && !lost) return;
    Layout& l = layouts[cur];
    const double ns = acc_s / acc_steps * 1e9;
    l.ns = l.measured ? 0.5 * l.ns + 0.5 * ns : ns;
    ++l.measured;
    acc_s = 0.0;
    acc_steps = 0;
    ++jobs;
    choose();
  }

  void choose() {
    best = -1;
    for (size_t i = 0; i < layouts.size(); ++i)
      if (layouts[i].measured && (best < 0 || layouts[i].ns < layouts[best].ns)) best = static_cast<int>(i);
    for (size_t i = 0; i < layouts.size(); ++i)
      if (!layouts[i].measured) {  // time every layout once first
        cur = static_cast<int>(i);
        return;
      }
    for (size_t i = 0; i < layouts.size(); ++i) {
      Layout& l = layouts[i];
      if (static_cast<int>(i) == best) continue;
      if (l.next_check == 0) {  // re-time the slower layouts now and then: the load changes
        const double q = std::max(1.0, l.ns / layouts[best].ns);
        l.next_check = jobs + static_cast<int64_t>(std::min(1024.0, 16.0 * q * q));
      } else if (l.next_check <= jobs) {
        l.next_check = 0;
        cur = static_cast<int>(i);
        return;
      }
    }
    cur = best;
  }
};

}  // namespace
