# frozen_string_literal: true

# ruby sidekiq_read.rb REDIS_URL [CA_FILE]
#
# CA_FILE (PEM) verifies the server's certificate for a rediss:// URL.
#
# The Ruby side of the comparison: one read of every queue's size and latency
# through Sidekiq's own API, as a Ruby tool or a Rails console would do it.
# Prints on stdout [{"name","size","latency"}...] sorted by name (latency in
# seconds), and on stderr one line
#   round_trips=M commands=N read_ms=T
# where round_trips counts calls of Redis::Client#process in the redis gem
# (4.x): each one writes its command(s) and then reads their replies, so it is
# one network round trip (a pipeline is one process call with many commands).
# read_ms is the time spent inside Sidekiq::Queue.all.map, without Ruby's
# start-up and require.

require "json"
require "sidekiq/api"

# Counts what the redis gem sends. Redis::Client#process is the one place
# through which #call, #call_loop and #call_pipelined (and the AUTH/SELECT/
# CLIENT SETNAME of #connect) write commands.
module RoundTripCounter
  class << self
    attr_accessor :round_trips, :commands
  end
  self.round_trips = 0
  self.commands = 0

  def process(commands, &block)
    RoundTripCounter.round_trips += 1
    RoundTripCounter.commands += commands.size
    super
  end
end

unless Redis::Client.method_defined?(:process) || Redis::Client.private_method_defined?(:process)
  abort "sidekiq_read.rb: Redis::Client#process not found (redis gem #{Redis::VERSION}); " \
        "this script expects the redis gem 4.x"
end
Redis::Client.prepend(RoundTripCounter)

url = ARGV.fetch(0) { abort "usage: ruby sidekiq_read.rb REDIS_URL [CA_FILE]" }
redis = {url: url, size: 1}
# The redis gem verifies the peer and its host name by default; the CA is
# the only thing to add.
redis[:ssl_params] = {ca_file: ARGV[1]} if ARGV[1]
Sidekiq.configure_client do |config|
  config.redis = redis
end

t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
rows = Sidekiq::Queue.all.map { |q| [q.name, q.size, q.latency] }
t1 = Process.clock_gettime(Process::CLOCK_MONOTONIC)

puts JSON.generate(rows.map { |name, size, latency| {"name" => name, "size" => size, "latency" => latency} })
warn format("round_trips=%d commands=%d read_ms=%.3f",
  RoundTripCounter.round_trips, RoundTripCounter.commands, (t1 - t0) * 1000)
