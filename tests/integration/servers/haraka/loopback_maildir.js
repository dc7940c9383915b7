// A Haraka plugin for tests on loopback: nothing leaves the machine.
//
// * lookup_rdns: answered here, so Haraka makes no reverse-DNS (PTR) query.
// * rcpt: with accept_unauthenticated=true every recipient is accepted; otherwise the
//   decision is Haraka's own (recipients are accepted once the session is
//   authenticated, i.e. relaying, and refused before).
// * queue and queue_outbound: every message is written to a Maildir-style folder, one
//   file per message, first in tmp/ and then renamed into new/; so mail of
//   authenticated sessions never reaches outbound delivery (no MX lookup, no
//   connection to the world).
//
// Configuration: loopback_maildir.ini, [main] maildir=/absolute/path and
// accept_unauthenticated=true|false.

'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

let sequence = 0

exports.register = function () {
    this.load_loopback_maildir_ini()
    this.register_hook('lookup_rdns', 'answer_rdns')
    this.register_hook('rcpt', 'accept_recipient')
    this.register_hook('queue', 'deliver')
    this.register_hook('queue_outbound', 'deliver')
}

exports.load_loopback_maildir_ini = function () {
    this.cfg = this.config.get('loopback_maildir.ini', {
        booleans: ['-main.accept_unauthenticated'],
    })
    const folder = this.cfg.main.maildir
    if (!folder || !path.isAbsolute(folder)) {
        throw new Error('loopback_maildir.ini: [main] maildir must be an absolute path')
    }
    this.maildir = folder
    for (const sub of ['tmp', 'new', 'cur']) {
        fs.mkdirSync(path.join(folder, sub), { recursive: true })
    }
}

exports.answer_rdns = function (next) {
    next(OK, 'localhost')
}

exports.accept_recipient = function (next) {
    if (this.cfg.main.accept_unauthenticated) return next(OK)
    next()
}

function envelope_lines(txn) {
    const sender = txn.mail_from ? txn.mail_from.format() : '<>'
    const recipients = txn.rcpt_to.map((rcpt) => rcpt.address).join(', ')
    return `Return-Path: ${sender}\r\nX-Envelope-To: ${recipients}\r\n`
}

exports.deliver = function (next, connection) {
    const txn = connection?.transaction
    if (!txn) return next()

    sequence += 1
    const name = `${Date.now()}.P${process.pid}Q${sequence}.${txn.uuid}.${os.hostname()}`
    const temporary = path.join(this.maildir, 'tmp', name)
    const final = path.join(this.maildir, 'new', name)

    let finished = false
    const fail = (error) => {
        if (finished) return
        finished = true
        connection.logerror(this, `could not store ${name}: ${error.message}`)
        fs.rm(temporary, { force: true }, () => next(DENYSOFT, 'could not store the message'))
    }

    const output = fs.createWriteStream(temporary, { flags: 'wx', mode: 0o644 })
    output.once('error', fail)
    output.once('close', () => {
        if (finished) return
        fs.rename(temporary, final, (error) => {
            if (error) return fail(error)
            finished = true
            connection.loginfo(this, `stored ${final}`)
            next(OK)
        })
    })
    output.write(envelope_lines(txn))
    txn.message_stream.pipe(output)
}
