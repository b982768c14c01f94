# Enqueues jobs with Sidekiq's own client: ruby produce.rb QUEUE RECORD FIRST COUNT SECONDS
# (ids FIRST...FIRST+COUNT; Redis from REDIS_URL).
require "sidekiq"

queue, record, first, count, seconds = ARGV
raise "usage: produce.rb QUEUE RECORD FIRST COUNT SECONDS" unless seconds

first = Integer(first)
(first...first + Integer(count)).each do |id|
  Sidekiq::Client.push("queue" => queue, "class" => "RecordJob", "args" => [id.to_s, Float(seconds), record])
end
