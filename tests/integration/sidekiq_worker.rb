# A Sidekiq app for the end-to-end test: `sidekiq -r` this file. Each job
# takes a while (as real work does), then counts itself in Redis.
require "sidekiq"

class SlowJob
  include Sidekiq::Worker

  def perform(seconds)
    sleep(Float(seconds))
    Sidekiq.redis { |c| c.incr("e2e:done") }
  end
end
