<?php
// fanout3's `work` stage in PHP, an exec stage written with
// clients/php/WarrenStage.php: the sha256 of the part as compact JSON,
// emitted as {"id", "part", "digest"}. Used by the benchmark harness
// (`cargo bench -p warren-command --bench compare`).

require __DIR__ . '/../../clients/php/WarrenStage.php';

Warren\Stage::run(function (array $part, Warren\Context $ctx): void {
    $data = json_encode($part, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    $ctx->emit(['id' => $part['id'], 'part' => $part['part'], 'digest' => hash('sha256', $data)]);
});
