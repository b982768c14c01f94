# A Sidekiq job that records its start and its end, so a test can prove every job ran once and none
# was cut: HINCRBY <record>:started <id>, sleep, HINCRBY <record>:ended <id>.
# Run: sidekiq -r ./worker.rb -q QUEUE (Redis from REDIS_URL, as Sidekiq reads it).
require "sidekiq"

class RecordJob
  include Sidekiq::Worker
  sidekiq_options retry: false

  def perform(id, seconds, record)
    Sidekiq.redis { |c| c.hincrby("#{record}:started", id, 1) }
    sleep seconds
    Sidekiq.redis { |c| c.hincrby("#{record}:ended", id, 1) }
  end
end
