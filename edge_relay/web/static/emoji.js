// Tags that are emoji short codes show as the emoji before the title, as in ntfy (whose
// clients use GitHub's gemoji names); other tags are listed as text. A compact table of the
// common ones (ntfy's docs' examples and the usual alert, status and home ones).

const TABLE = {
  "+1": "👍", thumbsup: "👍", "-1": "👎", thumbsdown: "👎", tada: "🎉", partying_face: "🥳",
  heavy_check_mark: "✔️", white_check_mark: "✅", ballot_box_with_check: "☑️", x: "❌",
  heavy_multiplication_x: "✖️", warning: "⚠️", rotating_light: "🚨", no_entry: "⛔",
  no_entry_sign: "🚫", stop_sign: "🛑", triangular_flag_on_post: "🚩", skull: "💀",
  skull_and_crossbones: "☠️", fire: "🔥", boom: "💥", zap: "⚡", bell: "🔔", no_bell: "🔕",
  loudspeaker: "📢", mega: "📣", bulb: "💡", info: "ℹ️", information_source: "ℹ️",
  question: "❓", exclamation: "❗", heavy_exclamation_mark: "❗", bangbang: "‼️",
  facepalm: "🤦", man_facepalming: "🤦‍♂️", woman_facepalming: "🤦‍♀️", smile: "😄",
  smiley: "😃", grin: "😁", joy: "😂", wink: "😉", cry: "😢", sob: "😭", rage: "😡",
  scream: "😱", thinking: "🤔", sunglasses: "😎", heart: "❤️", broken_heart: "💔",
  star: "⭐", sparkles: "✨", rocket: "🚀", cd: "💿", dvd: "📀", computer: "💻",
  desktop_computer: "🖥️", keyboard: "⌨️", floppy_disk: "💾", minidisc: "💽",
  iphone: "📱", phone: "☎️", telephone_receiver: "📞", email: "📧", envelope: "✉️",
  inbox_tray: "📥", outbox_tray: "📤", package: "📦", lock: "🔒", unlock: "🔓", key: "🔑",
  shield: "🛡️", hammer: "🔨", wrench: "🔧", gear: "⚙️", link: "🔗", paperclip: "📎",
  chart_with_upwards_trend: "📈", chart_with_downwards_trend: "📉", bar_chart: "📊",
  calendar: "📆", date: "📅", clock: "🕐", alarm_clock: "⏰", hourglass: "⌛",
  stopwatch: "⏱️", battery: "🔋", electric_plug: "🔌", house: "🏠", house_with_garden: "🏡",
  door: "🚪", bed: "🛏️", toilet: "🚽", shower: "🚿", bathtub: "🛁", thermometer: "🌡️",
  sunny: "☀️", cloud: "☁️", umbrella: "☔", snowflake: "❄️", droplet: "💧",
  ocean: "🌊", car: "🚗", bike: "🚲", truck: "🚚", dog: "🐶", cat: "🐱", robot: "🤖",
  ghost: "👻", eyes: "👀", wave: "👋", clap: "👏", pray: "🙏", muscle: "💪",
  money_with_wings: "💸", moneybag: "💰", shopping_cart: "🛒", coffee: "☕", pizza: "🍕",
  birthday: "🎂", gift: "🎁", trophy: "🏆", medal: "🏅", video_camera: "📹",
  camera: "📷", tv: "📺", movie_camera: "🎥", headphones: "🎧", musical_note: "🎵",
  speaker: "🔈", mute: "🔇", white_circle: "⚪", red_circle: "🔴", green_circle: "🟢",
  yellow_circle: "🟡", large_blue_circle: "🔵", green_heart: "💚", arrow_up: "⬆️",
  arrow_down: "⬇️", recycle: "♻️", hospital: "🏥", pill: "💊", syringe: "💉",
};

export function emoji(tag) {
  return Object.prototype.hasOwnProperty.call(TABLE, tag) ? TABLE[tag] : null;
}

// ([emoji...], [other tags...]) for a message's tags
export function splitTags(tags) {
  const icons = [];
  const rest = [];
  for (const t of Array.isArray(tags) ? tags : []) {
    if (typeof t !== "string") continue;
    const e = emoji(t);
    if (e) icons.push(e);
    else rest.push(t);
  }
  return [icons, rest];
}
