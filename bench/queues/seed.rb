# frozen_string_literal: true

# ruby seed.rb N [PROCESSES] | redis-cli -p PORT --pipe
#
# Writes, as Redis protocol on stdout, N Sidekiq queues and a few process
# heartbeats, shaped like what Sidekiq 6.4's client and server write:
#
#   SADD queues NAME
#   LPUSH queue:NAME JOB...      (oldest first, so the oldest ends at the tail)
#   SADD processes ID
#   HSET ID info JSON busy B beat T quiet false rss KB rtt_us U
#   EXPIRE ID 3600               (Sidekiq uses 60; a long bench must keep them)
#
# Queue 0 is "default" with 3 jobs; queue i > 0 is "queue-%05d" with i % 5
# jobs, so one queue in five is empty (listed in "queues" but without a list,
# as Sidekiq leaves it once drained). The oldest job of each queue was enqueued
# 1 s to 1 h ago. Everything is drawn from a fixed seed, except that times are
# relative to now.

require "json"

n = Integer(ARGV.fetch(0) { abort "usage: ruby seed.rb N [PROCESSES]" })
processes = Integer(ARGV.fetch(1, "3"))
abort "seed.rb: N must be at least 1" if n < 1

rng = Random.new(42)
now = Time.now.to_f
out = $stdout.binmode
buf = +""

emit = lambda do |*args|
  buf << "*#{args.size}\r\n"
  args.each do |a|
    s = a.to_s
    buf << "$#{s.bytesize}\r\n" << s << "\r\n"
  end
  if buf.bytesize > 1 << 20
    out.write(buf)
    buf.clear
  end
end

names = Array.new(n) { |i| i.zero? ? "default" : format("queue-%05d", i) }

names.each_with_index do |name, i|
  emit.call("SADD", "queues", name)
  jobs = i.zero? ? 3 : i % 5
  next if jobs.zero?

  oldest = now - (1 + rng.rand * 3599)
  payloads = Array.new(jobs) do |j|
    enqueued_at = oldest + j * rng.rand # younger and younger
    {
      "class" => "HardWorker",
      "args" => [i, j],
      "retry" => true,
      "queue" => name,
      "jid" => rng.bytes(12).unpack1("H*"),
      "created_at" => enqueued_at - rng.rand * 0.01,
      "enqueued_at" => enqueued_at
    }.to_json
  end
  emit.call("LPUSH", "queue:#{name}", *payloads)
end

processes.times do |p|
  hostname = "bench-worker-#{p + 1}"
  pid = 1000 + p
  identity = "#{hostname}:#{pid}:#{rng.bytes(6).unpack1("H*")}"
  info = {
    "hostname" => hostname,
    "started_at" => now - 3600,
    "pid" => pid,
    "tag" => "bench",
    "concurrency" => 10,
    "queues" => names.first(3),
    "labels" => [],
    "identity" => identity
  }.to_json
  emit.call("SADD", "processes", identity)
  emit.call("HSET", identity, "info", info, "busy", p * 3, "beat", now,
    "quiet", "false", "rss", 123_456, "rtt_us", 250)
  emit.call("EXPIRE", identity, 3600)
end

out.write(buf)
out.flush
