// A fixed pool of worker threads for data-parallel loops. The calling thread takes part, so a pool
// of size 1 runs everything inline.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace smelter {

class ThreadPool {
public:
    explicit ThreadPool(int threads);
    ~ThreadPool();
    int size() const { return static_cast<int>(workers_.size()) + 1; }

    // Calls fn(task, worker) for task in [0, tasks), worker in [0, size()). Blocks until done;
    // rethrows the first exception a task threw.
    void run(int64_t tasks, const std::function<void(int64_t, int)> &fn);

private:
    void work(int worker);
    void drain(int worker);

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int64_t, int)> *job_ = nullptr;
    int64_t tasks_ = 0;
    std::atomic<int64_t> next_{0};
    int busy_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
};

}  // namespace smelter
