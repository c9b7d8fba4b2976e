# Debian's real Sidekiq, driven by the integration tests.
#   ruby sidekiq_client.rb URL push QUEUE COUNT   pushes COUNT jobs with Sidekiq::Client.push
#   ruby sidekiq_client.rb URL push-slow QUEUE COUNT SECONDS
#                                                 pushes COUNT SlowJob jobs (sidekiq_worker.rb)
#   ruby sidekiq_client.rb URL measure            prints [{name,size,latency}] from Sidekiq's API
require "json"
require "sidekiq"
require "sidekiq/api"

url, mode, *rest = ARGV
Sidekiq.configure_client { |c| c.redis = { url: url } }
Sidekiq.logger.level = Logger::WARN

case mode
when "push"
  queue, count = rest
  Integer(count).times do |i|
    Sidekiq::Client.push("queue" => queue, "class" => "HardWorker", "args" => [i, "x"])
  end
when "push-slow"
  queue, count, seconds = rest
  Integer(count).times do
    Sidekiq::Client.push("queue" => queue, "class" => "SlowJob", "args" => [Float(seconds)])
  end
when "measure"
  out = Sidekiq::Queue.all.sort_by(&:name).map do |q|
    { name: q.name, size: q.size, latency: q.latency }
  end
  puts JSON.generate(out)
else
  abort "usage: sidekiq_client.rb URL push QUEUE COUNT | URL push-slow QUEUE COUNT SECONDS | URL measure"
end
