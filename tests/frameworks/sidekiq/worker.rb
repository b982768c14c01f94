# A Sidekiq job that records its start and its end, so a test can prove every job ran once and none
# was cut: HINCRBY <record>:started <id>, sleep, HINCRBY <record>:ended <id>.
# Run: sidekiq -r ./worker.rb -q QUEUE (Redis from REDIS_URL, as Sidekiq reads it).
require "sidekiq"

# A drain while Sidekiq boots (before its own TERM handler is installed and before any job was
# taken) ends the process with 0 instead of Ruby's death by SIGTERM (143). Sidekiq chains to this
# handler later; after start-up it does nothing.
booting = true
trap("TERM") { exit 0 if booting }
Sidekiq.configure_server { |config| config.on(:startup) { booting = false } }

class RecordJob
  include Sidekiq::Worker
  sidekiq_options retry: false

  def perform(id, seconds, record)
    Sidekiq.redis { |c| c.hincrby("#{record}:started", id, 1) }
    sleep seconds
    Sidekiq.redis { |c| c.hincrby("#{record}:ended", id, 1) }
  end
end
